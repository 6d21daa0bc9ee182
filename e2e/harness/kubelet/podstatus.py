"""What a kubelet reports of a pod whose container cannot run: pure, no cluster, no processes.

The worker calls these when it gives up on a pod for a while, and writes what they
return with one status patch (a merge patch: the lists are whole). Three failures, in
the shapes a kubelet writes them:

- `CONFIG_ERROR`: a container's environment cannot be made (a Secret, or one of its
  keys, missing): that container `waiting` reason CreateContainerConfigError with the
  kubelet's message (`podspec.config_error`); the containers after it wait too;
- `INIT_FAILED`: an init container exited non-zero (the artifact fetch refused): it is
  `terminated` with its exit code, reason Error and its termination message (what
  fetch.py writes: `fetch_words`); the containers after it wait (PodInitializing);
- `CRASHED`: the main container (Triton) exited before it was ready: `waiting`
  CrashLoopBackOff, the exit in `lastState.terminated` (the log's tail as its message
  only under terminationMessagePolicy FallbackToLogsOnError, as a kubelet does).

Each leaves the pod Ready False and ContainersReady False (reason ContainersNotReady),
Initialized False while an init container has not completed. `running` is the status
once the pod's containers run again (after a reported failure).

One difference from a kubelet, forced by kwok: a pod whose init container fails stays
in phase Running (a kubelet's would be Pending), since kwok's pod-ready stage turns
every Pending pod that is not Ready into a Running, Ready one again. kwok leaves a
Running pod's status alone, so what is written here stays. A pod that is never
restarted (restartPolicy Never: a tuning Job's) goes Failed when an init container
fails, as it does under a kubelet.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from e2e.harness.kubelet.podspec import Container, PodSpec

CONFIG_ERROR = "CreateContainerConfigError"
INIT_FAILED = "InitFailed"
CRASHED = "CrashLoopBackOff"

FILE_MESSAGE_LIMIT = 4096  # the kubelet's limit on a termination message file
LOG_MESSAGE_LINES = 80  # FallbackToLogsOnError: the log's last 80 lines ...
LOG_MESSAGE_LIMIT = 2048  # ... and at most 2 KiB of them
BACKOFF_S, BACKOFF_CAP_S = 10, 300  # the kubelet's crash-loop back-off


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why one of a pod's containers does not run, as its status will say."""

    kind: str  # CONFIG_ERROR, INIT_FAILED or CRASHED
    container: str
    message: str
    exit_code: int = 1
    restarts: int = 0  # the container's restarts so far
    started: float = 0.0  # when the failed run began and ended (INIT_FAILED, CRASHED)
    finished: float = 0.0


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def fetch_words(error: BaseException, fetches: Sequence[tuple[str, str]]) -> str:
    """fetch.py's one line for a failed fetch ("fetch URI failed: ..."), URI as the pod names
    it. ``fetches``: (as the pod names it, as the runner fetched it through its mirrors) of
    each fetch the init container makes, in order; the failed one is the one the error names
    (else the first)."""
    text = str(error) or repr(error)
    named = fetches[0][0] if fetches else "?"
    for as_named, as_fetched in fetches:
        if as_fetched and as_fetched in text:
            named, text = as_named, text.replace(as_fetched, as_named)
            break
    return f"fetch {named} failed: {text}"


def log_message(tail: str) -> str:
    """A termination message from a log (FallbackToLogsOnError): its end, in the limits."""
    lines = "\n".join(tail.splitlines()[-LOG_MESSAGE_LINES:])
    return lines.encode()[-LOG_MESSAGE_LIMIT:].decode(errors="replace")


def backoff(restarts: int) -> str:
    """The kubelet's crash-loop back-off before restart number ``restarts + 1``, as Go
    prints a time.Duration (10s, 20s, 40s, 1m20s, 2m40s, 5m0s)."""
    seconds = min(BACKOFF_CAP_S, BACKOFF_S * 2 ** max(0, restarts))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def _condition(
    conditions: list[dict[str, Any]], kind: str, ok: bool, reason: str, message: str, now: float
) -> None:
    flag = "True" if ok else "False"
    found = next((c for c in conditions if c.get("type") == kind), None)
    if found is None:
        found = {"type": kind}
        conditions.append(found)
    if found.get("status") != flag:
        found.update(status=flag, lastTransitionTime=stamp(now))
    if ok:
        found.pop("reason", None)
        found.pop("message", None)
    else:
        found.update(reason=reason, message=message)


def _entry(
    old: Mapping[str, Mapping[str, Any]], c: Container, state: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    previous = old.get(c.name) or {}
    entry: dict[str, Any] = {
        "name": c.name,
        "image": previous.get("image") or c.image,
        "imageID": previous.get("imageID", ""),
        "ready": False,
        "started": False,
        "restartCount": int(previous.get("restartCount") or 0),
        "state": state,
    }
    if previous.get("lastState"):
        entry["lastState"] = previous["lastState"]
    entry.update(fields)
    return entry


def _by_name(status: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("name")): c for c in status.get(key) or []}


def _waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    waiting: dict[str, Any] = {"reason": reason}
    if message:
        waiting["message"] = message
    return {"waiting": waiting}


def _done(now: float) -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": stamp(now),
            "finishedAt": stamp(now),
        }
    }


def _go_list(names_: Sequence[str]) -> str:
    return "[" + " ".join(names_) + "]"  # how Go's %s prints a []string


def failed(
    spec: PodSpec, status: Mapping[str, Any], failure: Failure, now: float
) -> dict[str, Any]:
    """The pod status a kubelet reports while ``failure`` keeps the pod from running; the
    pod's other fields (IPs, start time, other conditions) as they were."""
    old_init, old_main = (
        _by_name(status, "initContainerStatuses"),
        _by_name(status, "containerStatuses"),
    )
    in_init = any(c.name == failure.container for c in spec.init_containers)
    init: list[dict[str, Any]] = []
    incomplete: list[str] = []
    reached = False  # the failing init container was passed: the rest never started
    for c in spec.init_containers:
        if c.name == failure.container:
            reached = True
            init.append(_failed_entry(old_init, c, failure))
            incomplete.append(c.name)
        elif reached:
            init.append(_entry(old_init, c, _waiting("PodInitializing")))
            incomplete.append(c.name)
        elif in_init:  # before the failing one: it completed (a sidecar: it runs)
            state = {"running": {"startedAt": stamp(now)}} if c.sidecar else _done(now)
            init.append(_entry(old_init, c, state, ready=c.sidecar, started=c.sidecar))
        else:
            init.append(dict(old_init.get(c.name) or _entry(old_init, c, _done(now))))
    main: list[dict[str, Any]] = []
    for c in spec.containers:
        if c.name == failure.container:
            main.append(_failed_entry(old_main, c, failure))
        elif in_init:
            main.append(_entry(old_main, c, _waiting("PodInitializing"), restartCount=0))
        else:
            main.append(dict(old_main.get(c.name) or _entry(old_main, c, _waiting("Unknown"))))
    unready = [str(e["name"]) for e in main if not e.get("ready")] or [failure.container]
    conditions = [dict(c) for c in status.get("conditions") or []]
    _condition(
        conditions,
        "Initialized",
        not incomplete,
        "ContainersNotInitialized",
        f"containers with incomplete status: {_go_list(incomplete)}",
        now,
    )
    for kind in ("Ready", "ContainersReady"):
        _condition(
            conditions,
            kind,
            False,
            "ContainersNotReady",
            f"containers with unready status: {_go_list(unready)}",
            now,
        )
    patch: dict[str, Any] = {
        "conditions": conditions,
        "initContainerStatuses": init,
        "containerStatuses": main,
    }
    if spec.restart_policy == "Never" and failure.kind != CONFIG_ERROR:
        patch["phase"] = "Failed"  # never restarted: the pod is over
    return patch


def _failed_entry(
    old: Mapping[str, Mapping[str, Any]], c: Container, failure: Failure
) -> dict[str, Any]:
    if failure.kind == CONFIG_ERROR:
        return _entry(old, c, _waiting(CONFIG_ERROR, failure.message))
    ended: dict[str, Any] = {
        "exitCode": failure.exit_code,
        "reason": "Error",
        "startedAt": stamp(failure.started),
        "finishedAt": stamp(failure.finished),
    }
    if failure.message:
        ended["message"] = failure.message[:FILE_MESSAGE_LIMIT]
    if failure.kind == INIT_FAILED:
        return _entry(old, c, {"terminated": ended}, restartCount=failure.restarts)
    # CRASHED: back off before the next start, the exit in lastState
    words = f"back-off {backoff(failure.restarts)} restarting failed container={c.name}"
    return _entry(
        old,
        c,
        _waiting(CRASHED, words),
        lastState={"terminated": ended},
        restartCount=failure.restarts,
    )


def running(spec: PodSpec, status: Mapping[str, Any], restarts: int, now: float) -> dict[str, Any]:
    """The pod status once its containers run and are ready again (after a failure it
    reported): init containers completed (sidecars running), every container ready."""
    old_init, old_main = (
        _by_name(status, "initContainerStatuses"),
        _by_name(status, "containerStatuses"),
    )
    up = {"running": {"startedAt": stamp(now)}}
    init = []
    for c in spec.init_containers:
        previous = old_init.get(c.name) or {}
        state = previous.get("state") or {}
        if c.sidecar:
            init.append(_entry(old_init, c, up, ready=True, started=True))
        elif (state.get("terminated") or {}).get("exitCode") == 0:
            init.append(dict(previous))
        else:
            init.append(_entry(old_init, c, _done(now)))
    main = [
        _entry(old_main, c, up, ready=True, started=True, restartCount=restarts)
        for c in spec.containers
    ]
    conditions = [dict(c) for c in status.get("conditions") or []]
    for kind in ("Initialized", "Ready", "ContainersReady"):
        _condition(conditions, kind, True, "", "", now)
    return {"conditions": conditions, "initContainerStatuses": init, "containerStatuses": main}
