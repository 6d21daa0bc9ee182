"""Generated GeoDeployments through the real API server (issue 14's bad input, generated).

Hypothesis writes three classes of document from the example (`fuzz_documents`):
valid variants, near-valid ones (one field of the example made wrong: another type,
past a bound, empty, huge, unicode, an unknown field), and wild ones (random JSON as
the spec or a part of it, deep nesting, long lists, names no object can take). Each is
sent with `kubectl apply`, as a user would. Every one must end one of two ways:

* refused by the API server, with the field named in its words;
* accepted, and then reconciled to its generation with `Ready` True, or False with a
  reason.

After all of them, in the same namespace (which enforces the restricted Pod Security
Standard, as every e2e namespace does): the operator is still the same process, its
log has no traceback and no failed reconcile, each object's reconciles are bounded
and stop (no hot loop), nothing it does not own was touched (a user's Service under
a child's name, a bystander ConfigMap), every child it made is owned by a
GeoDeployment that exists, no pod was refused, and no Event was posted twice.

A short seeded run in `make test` (`GEO_FUZZ_EXAMPLES`, default 60; `GEO_FUZZ_SEED`);
a longer soak is the same test with more examples. kwok plays the nodes: no Triton runs.
"""

from __future__ import annotations

import collections
import json
import os
import re
import time
import urllib.request
from typing import Any

from e2e import fuzz_documents
from e2e.harness import Cluster, OperatorProcess, example, invariants, wait_for
from hypothesis import Phase, given, seed, settings

EXAMPLES = int(os.environ.get("GEO_FUZZ_EXAMPLES", "60"))
SEED = int(os.environ.get("GEO_FUZZ_SEED", "2026"))
RECONCILE_BOUND = 12  # reconciles per object while it settles (create, status, children)
QUIET_SECONDS = 10  # no reconcile of any object for this long: settled
# The API server's words name the field: "spec.triton.maxBatchSize: Invalid value",
# 'unknown field "spec.foo"', "metadata.name: Invalid value", "spec: Invalid value",
# 'unknown field "extra"' (a top-level one).
FIELD_NAMED = re.compile(
    r'(^|[\s"(])(spec|metadata)(\.[\w\[\]\-]+)*[:"]|unknown field "[^"]+"', re.MULTILINE
)


def _reconciles(operator: OperatorProcess, namespace: str) -> dict[str, float]:
    """geo_reconciles_total per object of ``namespace``, from the operator's /metrics."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = collections.Counter()
    pattern = re.compile(
        r'^geo_reconciles_total\{(?=[^}]*namespace="' + re.escape(namespace) + r'")'
        r'(?=[^}]*geodeployment="([^"]+)")[^}]*\}\s+(\S+)$',
        re.MULTILINE,
    )
    for name, value in pattern.findall(text):
        counts[name] += float(value)
    return dict(counts)


def _settled(body: dict[str, Any]) -> tuple[str, str] | None:
    """(Ready's status, reason) once the object is reconciled to its generation."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return None
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    if ready is None or ready["status"] not in ("True", "False") or not ready.get("reason"):
        return None
    return ready["status"], ready["reason"]


def _bystanders(cluster: Cluster, namespace: str) -> dict[str, str]:
    """Objects that are not GEO's, whose resourceVersions must not move: a ConfigMap, and
    a Service named as the child of the GeoDeployment `taken` applied after it."""
    cluster.kubectl("create", "configmap", "bystander", "-n", namespace, "--from-literal=a=1")
    cluster.kubectl("create", "service", "clusterip", "taken", "-n", namespace, "--tcp=80:80")
    return {
        f"{kind}/{name}": cluster.get(kind, name, namespace)["metadata"]["resourceVersion"]  # type: ignore[index]
        for kind, name in (("configmap", "bystander"), ("service", "taken"))
    }


def test_generated_documents_are_refused_with_the_field_named_or_settle(
    operator: OperatorProcess, namespace: str
) -> None:
    cluster = operator.cluster
    pid = operator.process.pid if operator.process else None
    log_start = len(operator.logs())
    bystanders = _bystanders(cluster, namespace)
    taken = example(namespace)
    taken["metadata"]["name"] = "taken"
    cluster.apply(taken)
    tried: list[tuple[str, str, str, str]] = []  # (class, name, outcome, detail)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # each example changes the cluster: no shrinking replays
        suppress_health_check=list(fuzz_documents.HEALTH_CHECKS),
    )
    @seed(SEED)
    @given(fuzz_documents.documents())
    def apply_one(cases: tuple[fuzz_documents.Case, ...]) -> None:
        case = cases[len(tried) % len(cases)]
        name = f"fz-{len(tried):03d}"
        document = case.document(name, namespace)
        out = cluster.kubectl("apply", "-f", "-", check=False, input=json.dumps(document))
        if out.returncode == 0:
            tried.append((case.kind, document["metadata"]["name"], "accepted", case.what))
            return
        words = out.stderr.strip()
        assert FIELD_NAMED.search(words), f"{case.kind} {case.what}: no field named: {words}"
        assert "Traceback" not in words
        tried.append((case.kind, name, "refused", case.what))

    apply_one()
    accepted = [name for _, name, outcome, _ in tried if outcome == "accepted"]

    def all_settled() -> dict[str, tuple[str, str]] | None:
        items = cluster.json("get", "geod", "-n", namespace)["items"]
        ends = {b["metadata"]["name"]: _settled(b) for b in items}
        if any(ends.get(name) is None for name in [*accepted, "taken"]):
            return None
        return {name: end for name, end in ends.items() if end is not None}

    ends = wait_for(all_settled, "every accepted document reconciled", timeout=240)
    # The user's Service under the child's name: left alone, and Ready says whose it is.
    assert ends["taken"] == ("False", "ChildRefused")
    taken_body = cluster.get("geod", "taken", namespace)
    assert taken_body is not None
    ready = next(c for c in taken_body["status"]["conditions"] if c["type"] == "Ready")
    assert "Service taken already exists and is not this GeoDeployment's" in ready["message"]

    # The reconciles stop (pods going Ready still cause some after status settles), and
    # stop within a bound: no hot loop on any object.
    samples = [_reconciles(operator, namespace)]

    def quiet() -> dict[str, float] | None:
        time.sleep(QUIET_SECONDS)
        samples.append(_reconciles(operator, namespace))
        return samples[-1] if samples[-1] == samples[-2] else None

    try:
        counts = wait_for(quiet, "the reconciles to stop", timeout=180, every=0)
    except AssertionError:
        moved = {
            n: (samples[-2].get(n), c) for n, c in samples[-1].items() if c != samples[-2].get(n)
        }
        raise AssertionError(f"reconciles go on with nothing changing: {moved}") from None
    over = {name: n for name, n in counts.items() if n > RECONCILE_BOUND}
    assert not over, f"reconciled more than {RECONCILE_BOUND} times: {over}"
    ends = wait_for(all_settled, "every accepted document reconciled, after the pods")

    # The operator: the same process, no traceback, no failed reconcile.
    assert operator.running() and operator.process is not None and operator.process.pid == pid
    log = operator.logs()[log_start:]
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:4000]
    assert "reconcile failed" not in log

    # Nothing not GEO's moved; nothing orphaned; status agrees with the children; no pod
    # refused by the restricted namespace; no Event twice.
    assert invariants.violations(cluster, namespace, bystanders) == []
    _report(tried, ends, counts)


def _report(
    tried: list[tuple[str, str, str, str]],
    ends: dict[str, tuple[str, str]],
    counts: dict[str, float],
) -> None:
    """How each class ended, for the note (pytest -s prints it)."""
    table: dict[tuple[str, str], int] = collections.Counter()
    for kind, name, outcome, _ in tried:
        status, reason = ends.get(name, ("?", "?"))
        end = outcome if outcome == "refused" else f"Ready={status} {reason}"
        table[(kind, end)] += 1
    print(f"\n[fuzz] {len(tried)} documents, seed {SEED}")
    for (kind, end), n in sorted(table.items()):
        print(f"[fuzz]   {kind:<10} {end:<40} {n}")
    if counts:
        values = sorted(counts.values())
        median = values[len(values) // 2]
        print(f"[fuzz] reconciles per object: max {values[-1]:.0f}, median {median:.0f}")
