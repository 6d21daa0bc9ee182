"""The generative replay (simulation/token_engine.py) and its anchors (token_autoscalers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geo_operator.api import models
from geo_operator.simulation import token_autoscalers, token_engine, token_trace
from geo_operator.simulation import token_replica as tr
from geo_operator.simulation.trace import TokenRequests

PROFILE = tr.TokenProfile(prefill_ms_per_token=0.04, step_base_ms=0.02, decode_ms_per_sequence=0.1)
SERVING = token_engine.Serving(PROFILE, slots=4, context_length=8192, batch_tokens=512)
OBJECTIVES = token_engine.TokenObjectives(ttft_ms=500, itl_ms=50)


@dataclasses.dataclass
class Fixed:
    replicas: int
    name: str = "fixed"
    period: int = 1

    def desired(self, view: token_engine.TokenView) -> int:
        return self.replicas


def _sim(
    requests: TokenRequests, scaler: token_engine.TokenAutoscaler, initial: int = 1, **kw: object
) -> token_engine.TokenResult:
    return token_engine.TokenSimulation(
        requests,
        SERVING,
        scaler,
        OBJECTIVES,
        min_replicas=1,
        max_replicas=20,
        initial_replicas=initial,
        **kw,  # type: ignore[arg-type]
    ).run()


LOAD = token_trace.synthetic("long-prompt", duration=600, rate=12.0, seed=1)


def test_more_replicas_fewer_violations_more_replica_seconds() -> None:
    results = [_sim(LOAD, Fixed(n), initial=n) for n in (1, 3, 8)]
    violations = [r.violation_seconds for r in results]
    cost = [r.replica_seconds for r in results]
    assert violations[0] > violations[1] >= violations[2]
    assert cost == sorted(cost) and cost[0] == pytest.approx(LOAD.arrivals[-1] // 1 + 1)
    assert results[0].worst_ttft_p99_ms > results[2].worst_ttft_p99_ms


def test_a_replay_is_deterministic_for_a_seed() -> None:
    a = _sim(LOAD, Fixed(2), initial=2, seed=3).summary()
    b = _sim(LOAD, Fixed(2), initial=2, seed=3).summary()
    c = _sim(LOAD, Fixed(2), initial=2, seed=4).summary()
    assert a == b and a != c


def test_new_pods_pay_the_start_up_and_cost_from_their_order() -> None:
    @dataclasses.dataclass
    class StepUp:
        name: str = "step"
        period: int = 1

        def desired(self, view: token_engine.TokenView) -> int:
            assert view.ready <= view.replicas
            if view.time == 100:
                assert view.replicas == 1
            return 3 if view.time >= 100 else 1

    result = _sim(LOAD, StepUp(), startup_seconds=40.0)
    assert result.replicas[99] == 1 and result.replicas[100] == 3
    assert result.ready[139] == 1 and result.ready[140] == 3
    assert result.actions == 1


def test_a_prompt_of_a_whole_context_is_refused_and_counts_as_slow() -> None:
    arrivals = np.arange(0.0, 100.0, 1.0)
    prompts = np.full(100, 100, np.int64)
    prompts[::10] = 9000  # beyond a context of 8192
    requests = TokenRequests("t", arrivals, prompts, np.full(100, 10, np.int64))
    result = _sim(requests, Fixed(1))
    assert result.refused == 10
    assert result.violation_seconds == 100  # every window has one refused of 10 (> 1 %)


def test_a_span_of_years_is_refused_naming_it() -> None:
    requests = TokenRequests(
        "decade", np.array([0.0, 10 * 365 * 86400.0]), np.array([10, 10]), np.array([5, 5])
    )
    with pytest.raises(ValueError, match=r"spans 315360001 s \(3650 days\)"):
        _sim(requests, Fixed(1))


def test_rescale_keeps_the_mix_and_scales_the_rate() -> None:
    doubled = token_trace.rescale(LOAD, 2.0, seed=0)
    assert 1.8 < len(doubled.arrivals) / len(LOAD.arrivals) < 2.2
    assert np.all(np.diff(doubled.arrivals) >= 0)
    assert abs(np.median(doubled.context_tokens) / np.median(LOAD.context_tokens) - 1) < 0.15
    shift = token_trace.synthetic("shift", duration=600, rate=4.0)
    half = shift.arrivals < 300
    assert shift.context_tokens[half].mean() > 5 * shift.context_tokens[~half].mean()
    assert shift.generated_tokens[~half].mean() > 5 * shift.generated_tokens[half].mean()


def _spec() -> models.GeoDeploymentSpec:
    from geo_operator.cli import io

    return io.load_spec("manifests/examples/simulate-pycode.yaml")


def test_every_policy_replays_with_the_fields_of_record() -> None:
    spec = _spec()
    options = token_engine.Options(profile=PROFILE, startup_seconds=20.0)
    requests = token_trace.synthetic("burst", duration=600, rate=6.0, seed=2)
    rows = {
        name: token_engine.replay(spec, requests, name, options).summary()
        for name in token_autoscalers.POLICIES
    }
    for row in rows.values():
        assert {"policy", "sloViolationSeconds", "replicaSeconds", "scalingActions"} <= set(row)
    assert rows["oracle"]["scalingActions"] > 0
    # the burst needs more replicas than the start: every policy but HPA reacts somehow
    assert rows["geo"]["scalingActions"] > 0


def test_the_oracle_orders_a_start_up_ahead() -> None:
    spec = _spec()
    requests = token_trace.synthetic("burst", duration=900, rate=8.0, seed=2)
    ahead = token_autoscalers.Oracle(spec.autoscaling, SERVING, requests, 30.0).plan
    need = token_autoscalers.Oracle(spec.autoscaling, SERVING, requests, 0.0).plan
    # at t it holds what any second of the next start-up will need
    assert all(ahead[t] == need[t : t + 31].max() for t in range(len(need)))
    assert need.max() > need.min()  # the burst needs more
