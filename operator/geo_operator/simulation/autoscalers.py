"""The autoscalers a trace is replayed under: GEO's own policy and four anchors.

All of them size the same Triton replicas on the same signal and target: the
effective target QPS per replica `scaling.capacity` gives (the declared
``targetQpsPerReplica``, else the measured capacity × ``targetUtilization``;
`replay` measures it) for requests per second, and (where the autoscaler's API
can take a second metric) the p99 objective for the worst ready pod's p99. GEO
alone corrects its target from what production shows, as the operator does.
All see the metrics through the same pipeline (the engine's `View`,
``metrics_lag_seconds`` old).

- ``geo``: `geo_operator.scaling.policy.decide`, the very function the operator's
  loop calls, every ``intervalSeconds``, on the QPS and p99 over the loop's
  window (``intervalSeconds`` for the direct source, ``rateWindowSeconds`` for
  Prometheus).
- ``hpa``: Kubernetes HPA v2 with a Pods metric (QPS, AverageValue = target)
  and an Object metric (p99, Value = target), default behavior. Constants:
  sync period 15 s (kube-controller-manager ``--horizontal-pod-autoscaler-sync-period``),
  tolerance 0.1 (``--horizontal-pod-autoscaler-tolerance``); scale-down
  stabilization 300 s, scale-up policies "100 % or 4 pods per 15 s, whichever is
  more", scale-down "100 % per 15 s" (HPAScalingRules defaults, API reference
  autoscaling/v2 and kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/
  "Default Behavior"). Replica formula and the handling of pods without
  metrics follow pkg/controller/podautoscaler/replica_calculator.go: pods
  still starting are Pending, so ignored; desired = ceil(usageRatio × ready pods).
- ``keda``: KEDA's Prometheus scaler feeding that HPA through an External metric
  (``metricType: AverageValue`` for QPS, ``Value`` for p99), ``pollingInterval``
  30 s (ScaledObject spec default). We model the metric value as refreshed once
  per polling interval (``useCachedMetrics: true``); with the default ``false``
  the HPA would query through KEDA on each 15 s sync and ``keda`` would equal
  ``hpa`` but for the External-metric formula (tolerance on the ratio to the
  spec replicas, desired = ceil(total / target)).
- ``kpa``: Knative's KPA on ``rps``, config-autoscaler defaults: ``stable-window``
  60 s, ``panic-window-percentage`` 10 (6 s), ``panic-threshold-percentage`` 200,
  ``target-utilization-percentage`` 70 (so each pod is sized for 70 % of the
  target), ``max-scale-up-rate`` 1000, ``max-scale-down-rate`` 2,
  ``tick-interval`` 2 s, ``scale-down-delay`` 0 (knative.dev/docs/serving/autoscaling/
  and config/core/configmaps/autoscaler.yaml). The decision follows
  pkg/autoscaler/scaling/autoscaler.go: panic when the panic-window demand is at
  least twice the ready pods, no scale-down while panicking, panic ends a stable
  window after the last over-threshold tick. Window averages are plain means of
  the per-second totals.
- ``oracle``: knows the whole trace. For every 10-second window it needs
  ceil(mean rate / target) replicas, orders them ``startup_seconds`` ahead and
  drops them as soon as no window within the start-up horizon needs them. It pays
  the start-up delay like everyone else: the floor for a policy on this target.
- ``instant`` (a reference, not an anchor): the oracle without foresight. It
  knows each window's need exactly the moment the window starts and orders
  exactly that, so its pods arrive a start-up delay late: what the start-up
  delay alone costs a policy that sizes to the target. Holding spare replicas
  (KPA's 70 % utilization, a long stabilization window) can beat it on
  violations, at a price in replica-seconds.
"""

from __future__ import annotations

import math

import numpy as np

from geo_operator.api import models
from geo_operator.scaling import capacity, policy
from geo_operator.simulation.engine import SLO_WINDOW, View
from geo_operator.simulation.trace import Trace

POLICIES = ("geo", "hpa", "keda", "kpa", "oracle")
REFERENCES = ("instant",)


def target_qps(spec: models.Autoscaling) -> float:
    """The target a policy sizes to; `scaling.capacity.resolve` fills it (declared or derived)."""
    if spec.target_qps_per_replica is None:
        raise ValueError("no target QPS per replica: nothing declared and nothing measured")
    return spec.target_qps_per_replica


def _qps_window(spec: models.Autoscaling) -> int:
    if spec.metrics.source is models.MetricsSourceKind.PROMETHEUS:
        return spec.metrics.rate_window_seconds
    return max(1, round(spec.interval_seconds))


# Triton's p99 is a Prometheus summary (prometheus-cpp's Summary: quantiles over a
# sliding max_age of 60 s in 5 age buckets, its defaults): the p99 every policy
# reads covers the last minute, whatever its QPS window.
P99_WINDOW_SECONDS = 60


def _observe(view: View, window: int) -> tuple[float | None, float | None]:
    qps = view.total_qps(window)
    p99 = view.worst_p99_ms(P99_WINDOW_SECONDS)
    if qps is not None and p99 is None and qps == 0:
        p99 = 0.0  # an idle server has no p99; with no traffic 0 is the truth (as the loop does)
    return qps, p99


class Geo:
    """GEO's policy, `scaling.policy.decide`, exactly as the operator's loop calls it: each
    tick the target from `scaling.capacity` (declared, else the measured capacity × the
    correction × utilization), the decision, then the correction `capacity.learn` draws
    from the tick."""

    name = "geo"

    def __init__(self, deployment: models.GeoDeploymentSpec, measured: float | None) -> None:
        self.deployment = deployment
        self.measured = measured
        self.correction = capacity.Correction()
        self.learning = True  # False: keep the first target (a benchmark's baseline)
        self.target = capacity.target(deployment, measured, self.correction)
        self.initial_target = self.target
        self.spec = capacity.resolve(deployment, self.target)
        self.period = max(1, round(self.spec.interval_seconds))
        self.window = _qps_window(self.spec)
        self.memory = policy.Memory()
        self.decisions: list[tuple[int, policy.Decision]] = []
        self.bound = deployment.triton.queue_bound()

    def desired(self, view: View) -> int:
        obs = policy.observation(
            view.time,
            view.replicas,
            view.ready,
            view.total_qps(self.window),
            view.worst_p99_ms(P99_WINDOW_SECONDS),
            view.queued(),
            no_p99="no data yet",
            startup_seconds=view.startup_seconds(),
            rejected_qps=view.rejected_qps(self.window),
            queue_bound=None if self.bound is None else self.bound * view.ready,
        )
        self.target = capacity.target(self.deployment, self.measured, self.correction)
        self.spec = capacity.resolve(self.deployment, self.target)
        decision, self.memory = policy.decide(self.spec, obs, self.memory)
        if self.learning:
            self.correction = capacity.learn(
                self.correction, obs, self.measured, self.deployment.target_p99_ms()
            )
        if decision.action != "maintain":
            self.decisions.append((view.time, decision))
        return decision.replicas

    def learned(self) -> capacity.Target:
        """The target the next tick would use: what the correction has learned so far."""
        return capacity.target(self.deployment, self.measured, self.correction)


class Hpa:
    """Kubernetes HPA v2 with default behavior on a QPS Pods metric and a p99 Object metric."""

    name = "hpa"
    SYNC_SECONDS = 15
    TOLERANCE = 0.1
    DOWN_STABILIZATION = 300
    UP_PERCENT, UP_PODS, POLICY_PERIOD = 100, 4, 15

    def __init__(self, spec: models.Autoscaling, poll_seconds: int | None = None) -> None:
        self.spec = spec
        self.period = self.SYNC_SECONDS
        self.window = spec.metrics.rate_window_seconds
        self.poll = poll_seconds
        self._cached: tuple[int, float | None, float | None] | None = None
        self.recommendations: list[tuple[int, int]] = []
        self.events: list[tuple[int, int]] = []  # (time, replica change)

    def _metrics(self, view: View) -> tuple[float | None, float | None]:
        if self.poll is None:
            return _observe(view, self.window)
        if self._cached is None or view.time - self._cached[0] >= self.poll:
            self._cached = (view.time, *_observe(view, self.window))
        return self._cached[1], self._cached[2]

    def _within(self, ratio: float) -> bool:
        return abs(1.0 - ratio) <= self.TOLERANCE

    def _by_qps(self, view: View, qps: float) -> int:
        ready = max(1, view.ready)
        ratio = qps / ready / target_qps(self.spec)
        return view.replicas if self._within(ratio) else math.ceil(ratio * ready)

    def _by_p99(self, view: View, p99: float) -> int:
        ratio = p99 / policy.target_p99_of(self.spec)
        return view.replicas if self._within(ratio) else math.ceil(ratio * max(1, view.ready))

    def metric_desired(self, view: View) -> int | None:
        qps, p99 = self._metrics(view)
        wanted = []
        if qps is not None:
            wanted.append(self._by_qps(view, qps))
        if p99 is not None:
            wanted.append(self._by_p99(view, p99))
        return max(wanted) if wanted else None

    def desired(self, view: View) -> int:
        now, current = view.time, view.replicas
        metric = self.metric_desired(view)
        if metric is None:
            return current  # no metric: the HPA keeps the scale as it is
        # Stabilization (stabilizeRecommendationWithBehaviors): up window 0, down window 300 s.
        down = max(
            [metric] + [r for t, r in self.recommendations if t > now - self.DOWN_STABILIZATION]
        )
        up = metric
        recommendation = min(max(current, up), down)
        self.recommendations = [
            (t, r) for t, r in self.recommendations if t > now - self.DOWN_STABILIZATION
        ] + [(now, metric)]
        # Rate limits (convertDesiredReplicasWithBehaviorRate).
        recent = [(t, d) for t, d in self.events if t > now - self.POLICY_PERIOD]
        added = sum(d for _, d in recent if d > 0)
        removed = -sum(d for _, d in recent if d < 0)
        start = current - added + removed
        if recommendation > current:
            limit = max(math.ceil(start * (1 + self.UP_PERCENT / 100)), start + self.UP_PODS)
            recommendation = min(recommendation, max(limit, current))
        recommendation = max(self.spec.min_replicas, min(self.spec.max_replicas, recommendation))
        if recommendation != current:
            self.events = [*recent, (now, recommendation - current)]
        return recommendation


class Keda(Hpa):
    """KEDA's Prometheus scaler: an External metric polled every 30 s, fed to the HPA."""

    name = "keda"
    POLLING_INTERVAL = 30

    def __init__(self, spec: models.Autoscaling) -> None:
        super().__init__(spec, poll_seconds=self.POLLING_INTERVAL)

    def _by_qps(self, view: View, qps: float) -> int:
        # GetExternalPerPodMetricReplicas: tolerance on total / (target × spec replicas).
        ratio = qps / (target_qps(self.spec) * max(1, view.replicas))
        if self._within(ratio):
            return view.replicas
        return math.ceil(qps / target_qps(self.spec))


class Kpa:
    """Knative Pod Autoscaler on requests per second, config-autoscaler defaults."""

    name = "kpa"
    period = 2  # tick-interval
    STABLE_WINDOW = 60
    PANIC_WINDOW = 6  # panic-window-percentage 10 of the stable window
    PANIC_THRESHOLD = 2.0
    TARGET_UTILIZATION = 0.7
    MAX_SCALE_UP_RATE = 1000.0
    MAX_SCALE_DOWN_RATE = 2.0

    def __init__(self, spec: models.Autoscaling) -> None:
        self.spec = spec
        self.target = target_qps(spec) * self.TARGET_UTILIZATION
        self.panic_time: int | None = None
        self.max_panic_pods = 0

    def desired(self, view: View) -> int:
        series = view.qps_series(self.STABLE_WINDOW)
        if series.shape[0] == 0:
            return view.replicas
        stable = float(series.mean())
        panic = float(series[-self.PANIC_WINDOW :].mean())
        ready = max(1, view.ready)
        max_up = math.ceil(self.MAX_SCALE_UP_RATE * ready)
        max_down = math.floor(ready / self.MAX_SCALE_DOWN_RATE)
        dspc = math.ceil(stable / self.target)
        dppc = math.ceil(panic / self.target)
        stable_pods = int(min(max(dspc, max_down), max_up))
        panic_pods = int(min(max(dppc, max_down), max_up))
        over = dppc / ready >= self.PANIC_THRESHOLD
        now = view.time
        if over:
            self.panic_time = now
        elif self.panic_time is not None and now - self.panic_time > self.STABLE_WINDOW:
            self.panic_time, self.max_panic_pods = None, 0
        wanted = stable_pods
        if self.panic_time is not None:
            wanted = max(wanted, panic_pods)
            if wanted > self.max_panic_pods:
                self.max_panic_pods = wanted
            else:
                wanted = self.max_panic_pods
        return max(self.spec.min_replicas, min(self.spec.max_replicas, wanted))


class Oracle:
    """Knows the future; orders replicas a start-up delay ahead of the windows that need them."""

    name = "oracle"
    period = 1

    def __init__(
        self, spec: models.Autoscaling, trace: Trace, startup_seconds: float, foresight: bool = True
    ) -> None:
        self.name = "oracle" if foresight else "instant"
        n = trace.duration
        windows = -(-n // SLO_WINDOW)
        padded = np.zeros(windows * SLO_WINDOW)
        padded[:n] = trace.rate
        rate = padded.reshape(windows, SLO_WINDOW).mean(axis=1)
        need = np.ceil(rate / target_qps(spec) - 1e-9).astype(np.int64)
        need = np.clip(need, spec.min_replicas, spec.max_replicas)
        per_second = np.repeat(need, SLO_WINDOW)[:n]
        ahead = math.ceil(startup_seconds) if foresight else 0
        # At t, hold what any second in [t, t + start-up] will need.
        padded_need = np.concatenate([per_second, np.full(ahead + 1, per_second[-1])])
        windows_view = np.lib.stride_tricks.sliding_window_view(padded_need, ahead + 1)
        self.plan = windows_view.max(axis=1)[:n]

    def initial(self) -> int:
        return int(self.plan[0])

    def desired(self, view: View) -> int:
        return int(self.plan[min(view.time, len(self.plan) - 1)])


def make(
    name: str,
    deployment: models.GeoDeploymentSpec,
    measured: float | None,
    trace: Trace,
    startup_seconds: float,
) -> Geo | Hpa | Keda | Kpa | Oracle:
    """The policy ``name`` for ``deployment``, whose replicas measured ``measured`` req/s
    within the p99 objective: GEO learns from there, the others keep the target it gives."""
    if name == "geo":
        return Geo(deployment, measured)
    spec = capacity.resolve(deployment, capacity.target(deployment, measured))
    if name == "hpa":
        return Hpa(spec)
    if name == "keda":
        return Keda(spec)
    if name == "kpa":
        return Kpa(spec)
    if name == "oracle":
        return Oracle(spec, trace, startup_seconds)
    if name == "instant":
        return Oracle(spec, trace, startup_seconds, foresight=False)
    raise ValueError(f"unknown policy {name!r}: one of {', '.join(POLICIES + REFERENCES)}")
