"""What `geo tune` prints: the measurement table(s) side by side, or the same as JSON.

Pure formatting of `search.SearchResult`s of `measure.Result`s; called by the
CLI only. Kept apart so the CLI holds the verbs and this module the words.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from geo_operator.api import models
from geo_operator.tuning import search
from geo_operator.tuning.measure import Result

Outcomes = Mapping[str, search.SearchResult[Result]]


def _config(config: search.Config | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {
        "maxBatchSize": config.max_batch_size,
        "maxQueueDelayMicroseconds": config.max_queue_delay_us,
    }


def _unique(outcome: search.SearchResult[Result]) -> list[search.Config]:
    """Each measured config once, in the order first measured."""
    return list(dict.fromkeys(c for c, _ in outcome.measured))


def row(outcome: search.SearchResult[Result], config: search.Config) -> dict[str, Any]:
    """One config's JSON row: the mean throughput of its runs, the latest run's levels."""
    runs = outcome.results(config)
    result = runs[-1]
    best = result.best
    return {
        "maxBatchSize": config.max_batch_size,
        "maxQueueDelayMicroseconds": config.max_queue_delay_us,
        "dynamicBatching": config.max_queue_delay_us is not None,
        "withinBudget": all(r.within_budget for r in runs),
        "throughput": round(outcome.throughput(config), 1),
        "runs": len(runs),
        "concurrency": best.concurrency if best else None,
        "p50Ms": round(best.p50_ms, 3) if best else None,
        "p99Ms": round(best.p99_ms, 3) if best else None,
        "avgBatch": round(best.avg_batch, 2) if best else None,
        "chosen": config == outcome.chosen,
        "levels": [dataclasses.asdict(level) for level in result.levels],
    }


def as_json(
    *,
    model: str,
    latency_budget_ms: float,
    seconds: float,
    concurrency: Sequence[int],
    taken: int,
    loaded: search.Config | None,
    outcomes: Outcomes,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "latencyBudgetMs": latency_budget_ms,
        "secondsPerLevel": seconds,
        "concurrency": sorted(set(concurrency)),
        "measurementsTaken": taken,
        "loaded": _config(loaded),
    }
    for name, outcome in outcomes.items():
        out[name] = {
            "measurements": outcome.measurements,
            "chosen": _config(outcome.chosen),
            "results": [row(outcome, c) for c in _unique(outcome)],
        }
    return out


def table(title: str, outcome: search.SearchResult[Result]) -> list[str]:
    """One outcome as text lines, configs in grid order; twice-measured ones say so."""
    lines = [
        title,
        f"  {'config':<22} {'req/s':>8} {'conc':>5} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'avg batch':>9}  within budget",
    ]
    for config in sorted(_unique(outcome), key=search.Config.sort_key):
        runs = outcome.results(config)
        best = runs[-1].best
        mark = f" ({len(runs)} runs)" if len(runs) > 1 else ""
        mark += " <- chosen" if config == outcome.chosen else ""
        if best is None or not all(r.within_budget for r in runs):
            worst = min(runs[-1].levels, key=lambda lv: lv.p99_ms)
            lines.append(
                f"  {config.describe():<22} {'-':>8} {'-':>5} {worst.p50_ms:>8.2f} "
                f"{worst.p99_ms:>8.2f} {worst.avg_batch:>9.2f}  no{mark}"
            )
        else:
            lines.append(
                f"  {config.describe():<22} {outcome.throughput(config):>8.0f} "
                f"{best.concurrency:>5} {best.p50_ms:>8.2f} {best.p99_ms:>8.2f} "
                f"{best.avg_batch:>9.2f}  yes{mark}"
            )
    chosen = outcome.chosen.describe() if outcome.chosen else "none within the budget"
    lines.append(f"  chosen: {chosen}; measurements: {outcome.measurements}")
    return lines


def as_text(*, taken: int, loaded: search.Config | None, outcomes: Outcomes) -> str:
    """The tables (side by side with --full-sweep), the count, and what Triton serves."""
    tables = [
        table(f"{name} search" if name == "quick" else "full sweep", outcome)
        for name, outcome in outcomes.items()
    ]
    lines: list[str] = []
    if len(tables) == 1:
        lines += tables[0]
    else:
        width = max(len(line) for line in tables[0]) + 4
        for i in range(max(len(t) for t in tables)):
            left = tables[0][i] if i < len(tables[0]) else ""
            right = tables[1][i] if i < len(tables[1]) else ""
            lines.append(f"{left:<{width}}{right}".rstrip())
    sweep = outcomes.get("sweep")
    lines.append(
        f"measurements taken: {taken} (quick search {outcomes['quick'].measurements}"
        + (f", full grid {sweep.measurements}" if sweep is not None else "")
        + ")"
    )
    lines.append(
        f"Triton now serves: {loaded.describe()}"
        if loaded is not None
        else "nothing within the budget; Triton serves the last configuration measured"
    )
    return "\n".join(lines)


def tuned(outcome: search.SearchResult[Result], grid_size: int) -> models.TunedBatch | None:
    """The chosen config and its figures, as the tuning Job reports it to the operator."""
    chosen = outcome.chosen
    if chosen is None:
        return None
    best = outcome.result(chosen).best
    return models.TunedBatch(
        max_batch_size=chosen.max_batch_size,
        max_queue_delay_microseconds=chosen.max_queue_delay_us,
        throughput=round(outcome.throughput(chosen), 1),
        p99_ms=round(best.p99_ms, 3) if best else 0.0,
        concurrency=best.concurrency if best else None,
        measurements=outcome.measurements,
        grid_size=grid_size,
    )
