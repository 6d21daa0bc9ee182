"""The cost model: what one Triton replica costs, the load min-cost sizes for, and what each
artifact costs an hour to carry it.

Pure, like the rest of `artifacts`. `builders.plan` gathers a `Demand` (`demand`) for the
reconcile and `geo select`; `artifacts.selection`'s min-cost policy prices the qualifying
artifacts with `priced` and keeps the one serving with `kept`, then words the choice.
A replica's price comes from triton.resources read by `api.quantity`, priced by
objectives.prices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from geo_operator.api import models, quantity

GPU_RESOURCE = "nvidia.com/gpu"
# min-cost prices a replica by triton.resources; one that names no cpu (no memory) is
# priced as this many cores (GiB), and the reason says so: a free replica would make
# every artifact cost nothing and the comparison mean nothing.
NOMINAL_CPU_CORES = 1.0
NOMINAL_MEMORY_GIB = 1.0


@dataclasses.dataclass(frozen=True)
class Cost:
    """min-cost's figures for one qualifying artifact."""

    name: str
    accuracy: float
    capacity: float  # req/s one replica is sized to carry
    max_batch_size: int | None  # the measured (tuned) one, where measured
    replicas: int  # what the load needs, within [minReplicas, maxReplicas] unless over
    per_hour: float  # replicas × replica price × relativeCost
    over: bool  # the load needs more than maxReplicas


@dataclasses.dataclass(frozen=True)
class Demand:
    """What min-cost sizes for: the load, the replica bounds, the capacity rule, the price."""

    expected_qps: float | None  # total req/s; None: minReplicas' worth (nothing known yet)
    source: str  # where the load came from, in words
    min_replicas: int
    max_replicas: int
    target_utilization: float
    target_qps_per_replica: float | None  # declared: the capacity of every replica
    replica_price: float  # dollars per replica-hour
    price_basis: str  # how replica_price was computed, in words
    fixed: bool = False  # autoscaling off: spec.replicas is both bounds
    served: str | None = None  # the artifact serving now: kept unless another is clearly cheaper


def _resource(
    resources: Mapping[models.ResourceKind, Mapping[str, int | str]], name: str
) -> tuple[float | None, str | None]:
    """The quantity a replica asks for (requests, else limits, as the scheduler reads it),
    or None; and what is wrong with it, if something is."""
    for part in ("requests", "limits"):
        value = (resources.get(part) or {}).get(name)
        if value is None:
            continue
        try:
            amount = quantity.parse(value)
        except ValueError as error:
            return None, f"triton.resources.{part}.{name}: {error}"
        if amount < 0:
            return None, f"triton.resources.{part}.{name}: {value!r} is negative"
        return amount, None
    return None, None


def replica_price(
    resources: Mapping[models.ResourceKind, Mapping[str, int | str]], prices: models.Prices
) -> tuple[float, str]:
    """Dollars per hour for one Triton replica, and how it was computed (in words).

    cpu and memory from triton.resources (requests, else limits), priced by
    objectives.prices; one not set, or not a quantity, counts as the nominal
    NOMINAL_CPU_CORES / NOMINAL_MEMORY_GIB and the words say so; nvidia.com/gpu
    not set counts as none.
    """
    cores, cpu_problem = _resource(resources, "cpu")
    memory, memory_problem = _resource(resources, "memory")
    gpus, gpu_problem = _resource(resources, GPU_RESOURCE)
    problems = [p for p in (cpu_problem, memory_problem, gpu_problem) if p]
    gib = None if memory is None else memory / 2**30
    if cores is None and gib is None and not problems:
        words = [f"{NOMINAL_CPU_CORES:g} CPU, {NOMINAL_MEMORY_GIB:g} GiB nominal"]
        problems = ["triton.resources sets no cpu or memory"]
    else:
        words = [
            f"{cores:g} CPU" if cores is not None else f"{NOMINAL_CPU_CORES:g} CPU nominal",
            f"{gib:.3g} GiB" if gib is not None else f"{NOMINAL_MEMORY_GIB:g} GiB nominal",
        ]
    if gpus:
        words.append(f"{gpus:g} GPU")
    cores = NOMINAL_CPU_CORES if cores is None else cores
    gib = NOMINAL_MEMORY_GIB if gib is None else gib
    price = (
        cores * prices.cpu_core_hour
        + gib * prices.memory_gib_hour
        + (gpus or 0.0) * prices.gpu_hour
    )
    return price, "; ".join([", ".join(words), *problems])


# min-cost switches from the artifact serving now only to one cheaper by more than this
# fraction: a load near a threshold must not roll the pods back and forth on every scale.
SWITCH_MARGIN = 0.15


def demand(
    spec: models.GeoDeploymentSpec, current_qps: float | None = None, served: str | None = None
) -> Demand:
    """What to size for: objectives.expectedQps, else ``current_qps`` (the total req/s the
    autoscaler last saw), else nothing (minReplicas' worth); the replica bounds (spec.replicas
    for both when autoscaling is off); and one replica's price from triton.resources."""
    return dataclasses.replace(
        _demand(
            spec.autoscaling,
            spec.objectives,
            spec.triton.resources,
            current_qps,
            None if spec.autoscaling.enabled else spec.replicas,
        ),
        served=served,
    )


def _demand(
    scaling: models.Autoscaling,
    objectives: models.Objectives,
    resources: Mapping[models.ResourceKind, Mapping[str, int | str]],
    current_qps: float | None,
    fixed_replicas: int | None = None,
) -> Demand:
    if objectives.expected_qps is not None:
        load, source = objectives.expected_qps, "objectives.expectedQps"
    elif current_qps is not None:
        load, source = current_qps, "the load the autoscaler last saw"
    else:
        load, source = None, "no load known yet"
    price, basis = replica_price(resources, objectives.prices)
    lo, hi = scaling.min_replicas, scaling.max_replicas
    if fixed_replicas is not None:
        lo = hi = fixed_replicas
    return Demand(
        expected_qps=load,
        source=source,
        min_replicas=lo,
        max_replicas=hi,
        target_utilization=scaling.target_utilization,
        target_qps_per_replica=scaling.target_qps_per_replica,
        replica_price=price,
        price_basis=basis,
        fixed=fixed_replicas is not None,
    )


# selection's demand when the caller has none: minReplicas' worth at the default prices.
DEFAULT_DEMAND = _demand(models.Autoscaling(), models.Objectives(), {}, None)


def replicas_needed(load: float | None, capacity: float, demand: Demand) -> tuple[int, bool]:
    """Replicas that carry ``load`` at ``capacity`` each, within the bounds; and whether the
    load needs more than the upper one (then the count is what it needs)."""
    if load is None:
        return demand.min_replicas, False
    # round() first: 1200 / 400 may come out a hair above 3 in floating point.
    need = math.ceil(round(load / capacity, 9)) if capacity > 0 else demand.max_replicas + 1
    if need > demand.max_replicas:
        return need, True
    return max(demand.min_replicas, need), False


def priced(
    artifacts: Sequence[models.Artifact],
    accuracy: Mapping[str, float],
    capacity: Mapping[str, float],
    batch: Mapping[str, int],
    demand: Demand,
) -> list[Cost]:
    """Each artifact's `Cost` for ``demand``'s load at ``capacity`` req/s a replica, cheapest
    first: replicas = ceil(load / capacity) within [minReplicas, maxReplicas], cost =
    replicas × replica price × relativeCost (1 if undeclared). One that needs more than
    maxReplicas can't carry the load: it ranks after every one that can, and among such
    the most capacity per replica first. Ties: higher accuracy, then more capacity
    (headroom at the same price), then the order of ``artifacts``."""
    costs = []
    for a in artifacts:
        replicas, over = replicas_needed(demand.expected_qps, capacity[a.name], demand)
        per_hour = replicas * demand.replica_price * (a.relative_cost or 1.0)
        costs.append(
            Cost(
                a.name,
                accuracy[a.name],
                capacity[a.name],
                batch.get(a.name),
                replicas,
                per_hour,
                over,
            )
        )
    order = {a.name: i for i, a in enumerate(artifacts)}
    return sorted(
        costs,
        # Over the bound, what counts is how much of the load the bound's replicas carry.
        key=lambda c: (
            c.over,
            -c.capacity if c.over else 0.0,
            round(c.per_hour, 9),
            -c.accuracy,
            -c.capacity,
            order[c.name],
        ),
    )


def kept(ranked: Sequence[Cost], demand: Demand) -> Cost | None:
    """The artifact serving now (``demand.served``) when min-cost keeps it over the cheapest
    (``ranked[0]``): both carry the load and it costs at most `SWITCH_MARGIN` more."""
    best = ranked[0]
    serving = next((c for c in ranked if c.name == demand.served), None)
    if (
        serving is not None
        and serving is not best
        and not serving.over
        and not best.over
        and serving.per_hour <= best.per_hour * (1 + SWITCH_MARGIN)
    ):
        return serving
    return None
