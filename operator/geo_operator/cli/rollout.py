"""`geo rollout status|promote|abort|pause|resume NAME`: a GeoDeployment's rollout, by hand.

    geo rollout status digits -n ml         where the rollout stands, and what served when
    geo rollout status digits -o yaml       status.rollout as it is stored
    geo rollout promote digits              promote the running canary now
    geo rollout abort digits                roll the running canary back now
    geo rollout pause digits                hold rollouts (spec.rollout.paused: true)
    geo rollout resume digits               let them go on

promote and abort set the `geo.ai/rollout` annotation; the operator acts on it at its
next reconcile (at once: the annotation's change is one of its causes) and removes it.
They exit 2, changing nothing, when no canary is running. pause and resume edit
`spec.rollout.paused`, as `kubectl patch` would. The cluster is the current kubeconfig's
(or --kubeconfig), as for kubectl.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from geo_operator.api import models, names
from geo_operator.cli import io, options

if TYPE_CHECKING:
    from geo_operator.cli.options import Verbs

ACTIONS = ("status", "promote", "abort", "pause", "resume")


def register(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "rollout",
        help="a GeoDeployment's rollout: status (and history), promote, abort, pause, resume",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=ACTIONS, help="what to do")
    p.add_argument("name", help="the GeoDeployment")
    p.add_argument(
        "-n", "--namespace", default="default", help="its namespace (default: %(default)s)"
    )
    p.add_argument("--kubeconfig", help="the kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    options.add_output(p)
    p.set_defaults(func=cmd_rollout)


def _client(kubeconfig: str | None) -> Any:
    import kubernetes  # the other verbs must not pay for it

    from geo_operator.k8s import client as k8s

    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    else:
        k8s.load_config()
    return kubernetes.client.CustomObjectsApi()


def cmd_rollout(args: argparse.Namespace) -> int:
    from kubernetes.client import exceptions

    api = _client(args.kubeconfig)
    where = (models.GROUP, models.VERSION, args.namespace, models.PLURAL, args.name)
    try:
        body = api.get_namespaced_custom_object(*where)
    except exceptions.ApiException as error:
        if error.status == 404:
            raise io.UsageError(f"GeoDeployment {args.namespace}/{args.name} not found") from None
        raise
    status = models.parse_status(body.get("status") or {})
    rollout = status.rollout or models.RolloutStatus()
    if args.action == "status":
        if args.output == "text":
            print(describe(args.namespace, args.name, rollout))
        else:
            io.emit(rollout.model_dump(mode="json", by_alias=True, exclude_none=True), args.output)
        return 0
    if args.action in ("promote", "abort"):
        if (
            rollout.phase not in ("Progressing", "Paused", "Inconclusive")
            or not rollout.canary_hash
        ):
            raise io.UsageError(
                f"{args.namespace}/{args.name}: no canary is running (rollout {rollout.phase}); "
                "nothing was changed"
            )
        patch: dict[str, Any] = {
            "metadata": {"annotations": {names.ROLLOUT_ANNOTATION: args.action}}
        }
        said = f"{args.action} asked: the operator acts on it at its next reconcile"
    else:
        patch = {"spec": {"rollout": {"paused": args.action == "pause"}}}
        said = "rollouts paused" if args.action == "pause" else "rollouts resumed"
    api.patch_namespaced_custom_object(*where, patch)
    print(f"geodeployment.{models.GROUP}/{args.name}: {said}", file=sys.stdout)
    return 0


def _figures(figures: models.TrackFigures | None) -> str:
    if figures is None:
        return "-"
    text = f"{figures.requests} requests, {figures.errors} failed"
    if figures.p99_ms is not None:
        text += f", p99 {figures.p99_ms:.1f} ms"
    if figures.ttft_p99_ms is not None:
        text += f", TTFT p99 {figures.ttft_p99_ms:.1f} ms"
    if figures.itl_p99_ms is not None:
        text += f", inter-token p99 {figures.itl_p99_ms:.1f} ms over {figures.tokens} tokens"
    if figures.accuracy is not None:
        text += f", held-out {figures.accuracy:.4g}"
    return text


def describe(namespace: str, name: str, rollout: models.RolloutStatus) -> str:
    """The rollout in words, then its history, like `kubectl rollout status` and `history`."""
    lines = [f"geodeployment {namespace}/{name}: rollout {rollout.phase}"]
    if rollout.step is not None:
        lines.append(f"  step:     {rollout.step + 1}, canary weight {rollout.weight} %")
    if rollout.canary_hash or rollout.stable_hash:
        lines.append(
            f"  canary:   {rollout.canary_hash or '-'}   stable: {rollout.stable_hash or '-'}"
        )
    if rollout.verdict is not None:
        lines.append(f"  analysis: {rollout.verdict.outcome} at {rollout.last_analysis_time}")
        lines.append(f"    canary  {_figures(rollout.canary)}")
        lines.append(f"    stable  {_figures(rollout.stable)}")
        for gate in rollout.verdict.gates:
            lines.append(f"    {gate.gate:<14} {gate.outcome:<12} {gate.message}")
    if rollout.reason:
        lines.append(f"  reason:   {rollout.reason}")
    if rollout.rejected:
        lines.append("rejected (not retried until the spec or the measurements change):")
        for r in rollout.rejected:
            lines.append(f"  {r.config_hash}  {r.artifact or '-':<12} {r.time}  {r.reason}")
    lines.append("history (what served when, oldest first):")
    lines.append("  REVISION  HASH              ARTIFACT      BATCH  PROMOTED              HOW")
    if not rollout.history:
        lines.append("  (none yet)")
    for i, p in enumerate(rollout.history, 1):
        batch = "-" if p.max_batch_size is None else str(p.max_batch_size)
        lines.append(
            f"  {i:<8}  {p.config_hash:<16}  {p.artifact:<12}  {batch:<5}  {p.time:<20}  {p.reason}"
        )
    return "\n".join(lines)
