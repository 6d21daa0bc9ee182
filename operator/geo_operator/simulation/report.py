"""Print and plot replay results: one table row per (trace, policy), one PNG per trace."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from geo_operator.simulation.engine import SLO_WINDOW, Result

HEADER = (
    f"{'trace':<16} {'policy':<10} {'SLO-violation s':>15} {'replica-s':>10} "
    f"{'actions':>7} {'dir changes':>11} {'worst p99 ms':>12}"
)
REFUSED = f" {'refused':>8}"  # a column only when a bounded queue refused anything


def row(result: Result, refused: bool = False) -> str:
    line = (
        f"{result.trace[:16]:<16} {result.policy:<10} {result.violation_seconds:>15} "
        f"{result.replica_seconds:>10.0f} {result.actions:>7} {result.direction_changes:>11} "
        f"{result.worst_p99_ms:>12.1f}"
    )
    return line + (f" {result.timed_out + result.queue_full:>8}" if refused else "")


def table(results: Sequence[Result], warmup: int = 0) -> str:
    """One row per result; with ``warmup`` also the score from that second on; the
    requests refused (a bounded queue's) when any were."""
    refused = any(r.timed_out + r.queue_full for r in results)
    header = HEADER + (REFUSED if refused else "")
    if warmup <= 0:
        return "\n".join([header, *(row(r, refused) for r in results)])
    lines = [header + f" {f'SLO-s after {warmup}s':>17} {'replica-s after':>15}"]
    for r in results:
        violations, replica_seconds = r.scored(warmup)
        lines.append(f"{row(r, refused)} {violations:>17} {replica_seconds:>15.0f}")
    return "\n".join(lines)


def markdown(results: Sequence[Result]) -> str:
    lines = [
        "| trace | policy | SLO-violation s | replica-s | actions | direction changes "
        "| worst p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.trace} | {r.policy} | {r.violation_seconds} | {r.replica_seconds:.0f} | "
            f"{r.actions} | {r.direction_changes} | {r.worst_p99_ms:.1f} |"
        )
    return "\n".join(lines)


def plot(
    results: Sequence[Result], target_qps: float, target_p99_ms: float, path: pathlib.Path
) -> None:
    """Replicas of every policy over the replicas the load needs; p99 per window below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=[3, 2])
    minutes = [s / 60 for s in range(first.duration)]
    top.fill_between(
        minutes, first.offered_qps / target_qps, color="0.85", label="load / target QPS"
    )
    for r in results:
        top.plot(
            minutes, r.replicas, lw=1.2, label=f"{r.policy} ({r.violation_seconds} s over SLO)"
        )
    top.set_ylabel("replicas")
    top.set_title(f"{first.trace}: replicas under each autoscaler")
    top.legend(fontsize=8, ncol=3, loc="upper left")
    window_minutes = [(w + 0.5) * SLO_WINDOW / 60 for w in range(len(first.window_p99_ms))]
    for r in results:
        values = [p if p is not None else float("nan") for p in r.window_p99_ms]
        bottom.plot(window_minutes, values, lw=0.8, label=r.policy)
    bottom.axhline(target_p99_ms, color="red", ls="--", lw=1, label="p99 target")
    bottom.set_yscale("log")
    bottom.set_ylabel(f"p99 per {SLO_WINDOW} s (ms)")
    bottom.set_xlabel("minutes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
