"""The autoscalers a generative trace is replayed under: GEO's policy and the LLM
autoscalers of record, each as its own documentation describes it (constants cited).

All see the same metrics through the same pipeline (`token_engine.TokenView`, vLLM's
metric names, ``metrics_lag_seconds`` old) and act on the same replicas. Where a
constant was not found in the documentation it is marked *assumed* and says why.

- ``geo``: `geo_operator.scaling.policy.decide`, the operator loop's function, every
  ``intervalSeconds``, with the token signals (`policy.TokenTargets` from the spec's
  objectives and the calibrated profile).
- ``keda-waiting``: KEDA's Prometheus scaler on ``vllm:num_requests_waiting`` as vLLM's
  production stack ships it (docs/source/use_cases/autoscaling-keda.rst in
  github.com/vllm-project/production-stack: ``threshold: '5'``, ``pollingInterval: 15``,
  ``cooldownPeriod: 360``, ``minReplicaCount: 1``). KEDA feeds an HPA External metric,
  ``AverageValue`` (KEDA's default metricType): desired = ceil(total waiting / 5), HPA
  tolerance 0.1, HPA's default 300 s scale-down stabilization and scale-up policy
  (100 % or 4 pods per 15 s); ``cooldownPeriod`` only governs the step to zero
  (keda.sh/docs/2.18/reference/scaledobject-spec/), never taken here (minReplicaCount 1).
- ``aibrix-kpa``: AIBrix's KPA (docs/source/features/autoscaling/metric-based-autoscaling.rst
  in github.com/vllm-project/aibrix: "inspired by Knative", stable and panic windows) on
  ``gpu_cache_usage_perc``, ``targetValue: '0.3'`` and ``kpa.autoscaling.aibrix.ai/
  scale-down-delay: 5m`` as AIBrix's KPA sample on that metric sets them; Knative's
  defaults for the rest (knative.dev/docs/serving/autoscaling/kpa-specific/: stable window
  60 s, panic window 10 % = 6 s, panic threshold 200 %, max scale-down rate 2); the tick
  2 s (*assumed*: Knative's tick-interval; AIBrix collects the metrics itself).
- ``llmd-wva``: llm-d's workload variant autoscaler in saturation mode
  (github.com/llm-d/llm-d-workload-variant-autoscaler docs/saturation-scaling-config.md
  and capacity-scaling-config.md: ``kvCacheThreshold`` 0.80, ``queueLengthThreshold`` 5,
  ``kvSpareTrigger`` 0.1, ``queueSpareTrigger`` 3). A replica is saturated when its KV
  usage >= 0.8 or its queue >= 5; scale up by one when the non-saturated replicas' mean
  spare KV (0.8 - usage) < 0.1 or mean spare queue (5 - queue) < 3 (or none is
  non-saturated); scale-up is blocked while replicas are pending; scale down by one only
  when the load spread over N-1 replicas (total x N/(N-1)) keeps both spares above their
  triggers. Interval 30 s (*assumed*: the docs give no default here).
- ``dynamo-planner``: NVIDIA Dynamo's SLA planner, throughput-based scaling
  (docs.nvidia.com/dynamo/latest/design-docs/component-design/planner-design): every
  ``adjustment_interval`` (180 s, the SLA planner's documented default) it reads the
  request count, mean ISL and OSL, TTFT and ITL over the interval; corrections
  ``actual_ttft / expected_ttft`` and ``actual_itl / expected_itl`` against the profile;
  the next interval's load from the load predictor (``constant``: the last interval's,
  one of the documented constant / ARIMA / Prophet); replicas for prefill = predicted
  prompt tokens/s over the profile's prefill throughput, for decode = generated tokens/s
  over the profile's decode throughput at the largest batch whose ITL (x correction)
  stays within the objective. One engine does both here (aggregated), so the two add.
- ``hpa``: Kubernetes HPA on requests per second (what GEO did before it saw tokens):
  Pods metric AverageValue = the replica's request capacity on the trace's mean mix
  (from the profile) x targetUtilization; sync 15 s, tolerance 0.1, 300 s scale-down
  stabilization, scale-up 100 % or 4 pods per 15 s (kubernetes.io/docs/tasks/
  run-application/horizontal-pod-autoscale/ "Default Behavior"); pods starting ignored.
- ``oracle``: knows the trace. For every 10-second window it needs the engines the
  window's token work takes at targetUtilization (each request's cost from the profile),
  orders them a start-up ahead and drops them when no window within a start-up needs them.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from geo_operator.api import models
from geo_operator.scaling import policy
from geo_operator.simulation.token_engine import SLO_WINDOW, Serving, TokenView
from geo_operator.simulation.trace import TokenRequests

POLICIES = ("geo", "keda-waiting", "aibrix-kpa", "llmd-wva", "dynamo-planner", "hpa", "oracle")

# HPA defaults (kube-controller-manager flags and HPAScalingRules defaults).
HPA_SYNC_SECONDS = 15
HPA_TOLERANCE = 0.1
HPA_DOWN_STABILIZATION = 300
# vLLM production stack's ScaledObject (autoscaling-keda.rst).
KEDA_THRESHOLD = 5.0
KEDA_POLLING_SECONDS = 15
# AIBrix KPA on KV usage (its sample) and Knative's KPA defaults.
KPA_TARGET_KV = 0.3
KPA_STABLE_SECONDS = 60
KPA_PANIC_SECONDS = 6
KPA_PANIC_THRESHOLD = 2.0
KPA_MAX_SCALE_DOWN_RATE = 2.0
KPA_SCALE_DOWN_DELAY = 300
KPA_TICK_SECONDS = 2
# llm-d WVA saturation defaults.
WVA_KV_THRESHOLD = 0.80
WVA_QUEUE_THRESHOLD = 5.0
WVA_KV_SPARE = 0.1
WVA_QUEUE_SPARE = 3.0
WVA_INTERVAL_SECONDS = 30
# Dynamo SLA planner.
DYNAMO_INTERVAL_SECONDS = 180


def token_targets(spec: models.GeoDeploymentSpec, serving: Serving) -> policy.TokenTargets:
    """The policy's token targets: the spec's objectives, the profile's costs."""
    ttft, itl = objectives(spec)
    prompt_s, generated_s = serving.profile.token_seconds(serving.slots)
    return policy.TokenTargets(ttft, itl, prompt_s, generated_s, serving.slots)


def objectives(spec: models.GeoDeploymentSpec) -> tuple[float, float]:
    o = spec.objectives
    if o.time_to_first_token_p99_ms is None or o.inter_token_latency_p99_ms is None:
        raise ValueError(
            "a generative replay needs objectives.timeToFirstTokenP99Ms and "
            "objectives.interTokenLatencyP99Ms (the windows are scored against both)"
        )
    return o.time_to_first_token_p99_ms, o.inter_token_latency_p99_ms


def request_capacity(serving: Serving, requests: TokenRequests) -> float:
    """Requests per second one engine serves at the trace's mean mix, every slot busy."""
    work = serving.work_seconds(
        requests.context_tokens.astype(np.float64), requests.generated_tokens.astype(np.float64)
    )
    mean = float(work.mean()) if len(work) else 0.0
    return 1.0 / mean if mean > 0 else math.inf


class _HpaBehavior:
    """HPA's default behavior on a raw recommendation: tolerance, scale-up policy,
    scale-down stabilization (the highest recommendation of the window)."""

    def __init__(self) -> None:
        self.history: collections.deque[tuple[int, int]] = collections.deque()

    def apply(self, now: int, current: int, ratio: float | None, raw: int) -> int:
        if ratio is not None and abs(ratio - 1.0) <= HPA_TOLERANCE:
            raw = current
        self.history.append((now, raw))
        while self.history and self.history[0][0] < now - HPA_DOWN_STABILIZATION:
            self.history.popleft()
        if raw > current:
            return min(raw, max(2 * current, current + 4))
        return min(current, max(r for _, r in self.history))


class Geo:
    """GEO's policy, the operator's own function, on the token signals."""

    name = "geo"

    def __init__(self, spec: models.GeoDeploymentSpec, serving: Serving) -> None:
        self.spec = spec.autoscaling
        self.period = max(1, round(self.spec.interval_seconds))
        self.window = max(self.period, 30)
        self.tokens = token_targets(spec, serving)
        self.memory = policy.Memory()

    def desired(self, view: TokenView) -> int:
        obs = policy.observation(
            view.time,
            view.replicas,
            view.ready,
            view.request_rate(self.window),
            None,
            startup_seconds=view.startup_seconds(),
            prompt_tps=view.prompt_tps(self.window),
            generated_tps=view.generated_tps(self.window),
            waiting=view.waiting(),
            kv_usage=view.kv_usage(),
            ttft_p99_ms=view.ttft_p99_ms(self.window),
            itl_p99_ms=view.itl_p99_ms(self.window),
            tokens=self.tokens,
        )
        decision, self.memory = policy.decide(self.spec, obs, self.memory)
        return decision.replicas


class KedaWaiting:
    name = "keda-waiting"
    period = KEDA_POLLING_SECONDS

    def __init__(self) -> None:
        self.behavior = _HpaBehavior()

    def desired(self, view: TokenView) -> int:
        waiting = view.waiting()
        if waiting is None:
            return view.replicas
        raw = max(1, math.ceil(waiting / KEDA_THRESHOLD))
        ratio = waiting / (KEDA_THRESHOLD * view.replicas)
        return self.behavior.apply(view.time, view.replicas, ratio, raw)


class Hpa:
    name = "hpa"
    period = HPA_SYNC_SECONDS

    def __init__(self, target_rps: float, window: int = 60) -> None:
        self.target = target_rps
        self.window = window
        self.behavior = _HpaBehavior()

    def desired(self, view: TokenView) -> int:
        rps = view.request_rate(self.window)
        if rps is None or view.ready == 0:
            return view.replicas
        ratio = rps / view.ready / self.target
        return self.behavior.apply(view.time, view.replicas, ratio, math.ceil(ratio * view.ready))


class AibrixKpa:
    name = "aibrix-kpa"
    period = KPA_TICK_SECONDS

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[int, float]] = collections.deque()
        self.panic_until = -1
        self.low_since: int | None = None

    def desired(self, view: TokenView) -> int:
        per_pod = view.kv_per_pod()
        if not per_pod:
            return view.replicas
        self.samples.append((view.time, float(sum(per_pod))))
        while self.samples and self.samples[0][0] <= view.time - KPA_STABLE_SECONDS:
            self.samples.popleft()
        stable = np.mean([v for _, v in self.samples])
        panic = np.mean([v for t, v in self.samples if t > view.time - KPA_PANIC_SECONDS])
        want_stable = math.ceil(stable / KPA_TARGET_KV - 1e-9)
        want_panic = math.ceil(panic / KPA_TARGET_KV - 1e-9)
        ready = max(view.ready, 1)
        if want_panic / ready >= KPA_PANIC_THRESHOLD:
            self.panic_until = view.time + KPA_STABLE_SECONDS
        current = view.replicas
        if view.time < self.panic_until:
            return max(current, want_panic)  # no scale-down while panicking
        wanted = max(want_stable, math.ceil(current / KPA_MAX_SCALE_DOWN_RATE))
        if wanted < current:  # scale-down-delay: the lower count must hold that long
            if self.low_since is None:
                self.low_since = view.time
            if view.time - self.low_since < KPA_SCALE_DOWN_DELAY:
                return current
        else:
            self.low_since = None
        return wanted


class LlmdWva:
    name = "llmd-wva"
    period = WVA_INTERVAL_SECONDS

    def desired(self, view: TokenView) -> int:
        kv, queue = view.kv_per_pod(), view.waiting_per_pod()
        if not kv or queue is None:
            return view.replicas
        current = view.replicas
        free = [
            (k, q)
            for k, q in zip(kv, queue, strict=True)
            if k < WVA_KV_THRESHOLD and q < WVA_QUEUE_THRESHOLD
        ]
        if free:
            spare_kv = float(np.mean([WVA_KV_THRESHOLD - k for k, _ in free]))
            spare_q = float(np.mean([WVA_QUEUE_THRESHOLD - q for _, q in free]))
        else:
            spare_kv = spare_q = 0.0
        if spare_kv < WVA_KV_SPARE or spare_q < WVA_QUEUE_SPARE:
            return current if view.starting > 0 else current + 1  # hold while pending
        n = len(kv)
        if n <= 1 or view.starting > 0:
            return current
        # N/(N-1): the same load over one replica fewer must keep the spares.
        kv_after = sum(kv) / (n - 1)
        q_after = sum(queue) / (n - 1)
        if WVA_KV_THRESHOLD - kv_after >= WVA_KV_SPARE and (
            WVA_QUEUE_THRESHOLD - q_after >= WVA_QUEUE_SPARE
        ):
            return current - 1
        return current


class DynamoPlanner:
    name = "dynamo-planner"
    period = DYNAMO_INTERVAL_SECONDS

    def __init__(self, spec: models.GeoDeploymentSpec, serving: Serving) -> None:
        self.ttft_ms, self.itl_ms = objectives(spec)
        self.serving = serving

    def _expected_ttft_ms(self, isl: float) -> float:
        return self.serving.profile.step_ms(0, 0) + self.serving.profile.prefill_ms_per_token * isl

    def _decode_throughput(self, itl_ms: float) -> float:
        """Generated tokens/s of one engine at the largest batch whose step fits ``itl_ms``."""
        profile = self.serving.profile
        best = 1
        for n in range(1, self.serving.slots + 1):
            if profile.step_ms(n, 0) <= itl_ms:
                best = n
        return best / profile.step_ms(best, 0) * 1000.0

    def desired(self, view: TokenView) -> int:
        window = self.period
        rate = view.request_rate(window)
        prompt, generated = view.prompt_tps(window), view.generated_tps(window)
        if rate is None or prompt is None or generated is None or rate <= 0:
            return view.replicas
        isl, osl = prompt / rate, generated / rate
        ttft, itl = view.ttft_p99_ms(window), view.itl_p99_ms(window)
        expected_ttft = self._expected_ttft_ms(isl)
        prefill_correction = ttft / expected_ttft if ttft and expected_ttft > 0 else 1.0
        expected_itl = self.serving.profile.step_ms(self.serving.slots, 0)
        decode_correction = itl / expected_itl if itl and expected_itl > 0 else 1.0
        # constant predictor: the next interval's load is this one's
        prefill_tps = 1000.0 / self.serving.profile.prefill_ms_per_token
        # a prefill that misses its TTFT target by the correction takes that much more
        prefill_need = rate * isl / prefill_tps * max(prefill_correction, 1.0)
        decode_need = (
            rate * osl / self._decode_throughput(self.itl_ms / max(decode_correction, 1e-3))
        )
        return max(1, math.ceil(prefill_need + decode_need))


class Oracle:
    name = "oracle"
    period = 1

    def __init__(
        self,
        spec: models.Autoscaling,
        serving: Serving,
        requests: TokenRequests,
        startup_seconds: float,
    ) -> None:
        n = math.floor(float(requests.arrivals[-1])) + 1
        windows = -(-n // SLO_WINDOW)
        work = serving.work_seconds(
            requests.context_tokens.astype(np.float64), requests.generated_tokens.astype(np.float64)
        )
        per_window = np.bincount(
            (requests.arrivals // SLO_WINDOW).astype(np.int64), weights=work, minlength=windows
        )[:windows]
        need = np.ceil(per_window / SLO_WINDOW / spec.target_utilization - 1e-9).astype(np.int64)
        need = np.clip(need, spec.min_replicas, spec.max_replicas)
        per_second = np.repeat(need, SLO_WINDOW)[:n]
        ahead = math.ceil(startup_seconds)
        padded = np.concatenate([per_second, np.full(ahead + 1, per_second[-1])])
        self.plan = np.lib.stride_tricks.sliding_window_view(padded, ahead + 1).max(axis=1)[:n]

    def initial(self) -> int:
        return int(self.plan[0])

    def desired(self, view: TokenView) -> int:
        return int(self.plan[min(view.time, len(self.plan) - 1)])


TokenPolicy = Geo | KedaWaiting | AibrixKpa | LlmdWva | DynamoPlanner | Hpa | Oracle


def make(
    name: str,
    spec: models.GeoDeploymentSpec,
    serving: Serving,
    requests: TokenRequests,
    startup_seconds: float,
) -> TokenPolicy:
    if name == "geo":
        return Geo(spec, serving)
    if name == "keda-waiting":
        return KedaWaiting()
    if name == "aibrix-kpa":
        return AibrixKpa()
    if name == "llmd-wva":
        return LlmdWva()
    if name == "dynamo-planner":
        return DynamoPlanner(spec, serving)
    if name == "hpa":
        target = request_capacity(serving, requests) * spec.autoscaling.target_utilization
        return Hpa(target)
    if name == "oracle":
        return Oracle(spec.autoscaling, serving, requests, startup_seconds)
    raise ValueError(f"unknown generative policy {name!r}: one of {', '.join(POLICIES)}")
