"""A rollout through the reconcile, driven through a fake of our own `k8s` seam: the
canary Deployment beside the stable, the split, the analysis from each track's Triton
counters, promotion, rollback, the by-hand annotation and a restart mid-rollout."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
from tests.support.kube import FakeKube

from geo_operator.api import models, names
from geo_operator.builders import children
from geo_operator.controller import canary, context, reconcile

KEY = (models.KIND, "ml", "digits")


class Pods:
    """The Triton pods' cumulative counters, served as Triton's /metrics text."""

    def __init__(self) -> None:
        self.counters: dict[str, tuple[int, int, float]] = {}  # success, failure, p99 ms

    def fetch(self, url: str) -> str:
        success, failure, p99 = self.counters[url.removeprefix("pod://")]
        return (
            "# TYPE nv_inference_request_success counter\n"
            f'nv_inference_request_success{{model="digits",version="1"}} {success}\n'
            "# TYPE nv_inference_request_failure counter\n"
            'nv_inference_request_failure{model="digits",reason="BACKEND",version="1"} '
            f"{failure}\n"
            "# TYPE nv_inference_count counter\n"
            f'nv_inference_count{{model="digits",version="1"}} {success}\n'
            "# TYPE nv_inference_exec_count counter\n"
            f'nv_inference_exec_count{{model="digits",version="1"}} {success}\n'
            "# TYPE nv_inference_request_duration_us counter\n"
            f'nv_inference_request_duration_us{{model="digits",version="1"}} {success * 1000}\n'
            "# TYPE nv_inference_queue_duration_us counter\n"
            f'nv_inference_queue_duration_us{{model="digits",version="1"}} {success * 10}\n'
            "# TYPE nv_inference_request_summary_us summary\n"
            f'nv_inference_request_summary_us{{model="digits",version="1",quantile="0.99"}} '
            f"{p99 * 1000}\n"
        )


class Rollout:
    """One GeoDeployment, its pods and a clock, reconciled as the operator would."""

    def __init__(self, kube: FakeKube, body: dict[str, Any]) -> None:
        self.kube, self.body, self.now = kube, body, 1_900_000_000.0
        self.pods = Pods()
        self.ctx = self.context()

    def context(self) -> context.Context:
        """A fresh operator process: no memory but what the cluster holds."""
        return context.Context(
            self.kube, clock=lambda: self.now, windows=canary.Windows(self.pods.fetch)
        )

    def run(self) -> None:
        stored = self.kube.objects.get(KEY)
        body = copy.deepcopy(self.body)
        if stored is not None:
            body["metadata"] = {
                **body["metadata"],
                "resourceVersion": stored["metadata"]["resourceVersion"],
                "annotations": stored["metadata"].get("annotations") or {},
            }
            body["status"] = stored.get("status", {})
        self.kube.objects[KEY] = body
        reconcile.reconcile(self.ctx, "ml", "digits")

    def status(self) -> dict[str, Any]:
        return dict(self.kube.objects[KEY].get("status") or {})

    def rollout(self) -> dict[str, Any]:
        return dict(self.status().get("rollout") or {})

    def deployment(self, name: str = "digits") -> dict[str, Any] | None:
        return self.kube.objects.get(("Deployment", "ml", name))

    def settle(self, name: str = "digits") -> None:
        """The Deployment's pods all updated and ready, and one pod object per replica."""
        deployment = self.deployment(name)
        assert deployment is not None
        replicas = deployment["spec"]["replicas"]
        deployment["metadata"]["generation"] = 1
        deployment["status"] = {
            "observedGeneration": 1,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
        }
        track = deployment["spec"]["template"]["metadata"]["labels"][names.TRACK_LABEL]
        for key in [k for k in self.kube.objects if k[0] == "Pod" and k[2].startswith(name + "-")]:
            if self.kube.objects[key]["metadata"]["labels"][names.TRACK_LABEL] == track:
                del self.kube.objects[key]
        for i in range(replicas):
            pod = f"{name}-{i}"
            self.kube.objects[("Pod", "ml", pod)] = {
                "metadata": {
                    "name": pod,
                    "namespace": "ml",
                    "labels": {names.OWNER_LABEL: "digits", names.TRACK_LABEL: track},
                    "annotations": {names.METRICS_URL_ANNOTATION: f"pod://{pod}"},
                    "creationTimestamp": names.format_time(self.now),
                },
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            }
            self.pods.counters.setdefault(pod, (0, 0, 5.0))

    def serve(self, track: str, success: int, failure: int = 0, p99: float = 5.0) -> None:
        """Each of the track's pods serves that many more requests."""
        for key, pod in self.kube.objects.items():
            if key[0] == "Pod" and pod["metadata"]["labels"][names.TRACK_LABEL] == track:
                s, f, _ = self.pods.counters[key[2]]
                self.pods.counters[key[2]] = (s + success, f + failure, p99)

    def edit(self, **triton: Any) -> None:
        self.body["spec"]["triton"].update(triton)
        self.body["metadata"]["generation"] += 1

    def events(self) -> list[str]:
        return [reason for _, reason, _ in self.kube.events]


@pytest.fixture
def rollout(kube: FakeKube, body: dict[str, Any]) -> Rollout:
    body["spec"]["replicas"] = 4
    body["spec"]["rollout"] = {"steps": [25, 100], "analysisIntervalSeconds": 10, "minRequests": 50}
    r = Rollout(kube, body)
    r.run()  # the first deployment rolls to every pod
    r.settle()
    r.run()
    return r


def _hash(deployment: dict[str, Any] | None) -> str | None:
    return children.template_hash(deployment)


def test_first_deployment_rolls_and_is_history(rollout: Rollout) -> None:
    state = rollout.rollout()
    assert state["phase"] == "Promoted" and "nothing stable serves yet" in state["reason"]
    assert [h["maxBatchSize"] for h in state["history"]] == [32]
    assert rollout.deployment("digits-canary") is None


def test_a_good_canary_goes_through_every_step_and_is_promoted(rollout: Rollout) -> None:
    before = _hash(rollout.deployment())
    rollout.edit(maxBatchSize=16)
    rollout.run()
    state = rollout.rollout()
    assert (state["phase"], state["step"], state["weight"]) == ("Progressing", 0, 25)
    canary_ = rollout.deployment("digits-canary")
    assert canary_ is not None and canary_["spec"]["replicas"] == 1
    assert canary_["spec"]["selector"]["matchLabels"][names.TRACK_LABEL] == "canary"
    assert (
        "max_batch_size: 16"
        in rollout.kube.objects[("ConfigMap", "ml", "digits-canary-model")]["data"]["config.pbtxt"]
    )
    # The stable keeps its template and its ConfigMap; it gives up one pod to the canary.
    stable = rollout.deployment()
    assert _hash(stable) == before and stable is not None and stable["spec"]["replicas"] == 3
    assert (
        "max_batch_size: 32"
        in rollout.kube.objects[("ConfigMap", "ml", "digits-model")]["data"]["config.pbtxt"]
    )
    assert rollout.events()[-1] == "CanaryStarted"
    progressing = next(c for c in rollout.status()["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "CanaryAnalysis")

    rollout.settle("digits")
    rollout.settle("digits-canary")
    rollout.now += 11
    rollout.serve("canary", 60, p99=5.0)
    rollout.serve("stable", 60, p99=5.0)
    rollout.run()
    state = rollout.rollout()
    assert (state["phase"], state["step"], state["weight"]) == ("Progressing", 1, 100), state
    assert state["canary"]["requests"] == 60 and state["stable"]["requests"] == 180
    assert rollout.events()[-1] == "CanaryAdvanced"
    assert rollout.deployment("digits-canary")["spec"]["replicas"] == 4  # type: ignore[index]
    assert rollout.deployment()["spec"]["replicas"] == 0  # type: ignore[index]

    rollout.settle("digits-canary")
    rollout.now += 11
    rollout.serve("canary", 30)
    rollout.run()
    state = rollout.rollout()
    assert state["phase"] == "Promoted" and rollout.events()[-1] == "Promoted"
    assert [h["maxBatchSize"] for h in state["history"]] == [32, 16]
    assert state["history"][-1]["figures"]["requests"] == 120
    # The stable takes the canary's template; the canary serves until the stable has rolled.
    promoted = _hash(rollout.deployment("digits-canary"))
    assert _hash(rollout.deployment()) == promoted != before
    assert rollout.deployment()["spec"]["replicas"] == 4  # type: ignore[index]
    assert rollout.deployment("digits-canary") is not None
    rollout.settle()
    rollout.run()
    assert rollout.deployment("digits-canary") is None
    assert ("ConfigMap", "ml", "digits-canary-model") not in rollout.kube.objects
    # Settled: nothing more is written.
    patches = len(rollout.kube.status_patches)
    rollout.run()
    assert len(rollout.kube.status_patches) == patches


def test_an_erroring_canary_is_rolled_back_at_once_and_not_retried(rollout: Rollout) -> None:
    before = _hash(rollout.deployment())
    rollout.edit(maxBatchSize=8)
    rollout.run()
    rollout.settle("digits")
    rollout.settle("digits-canary")
    rollout.now += 11
    rollout.serve("canary", 10, failure=10)  # 10 of 20 failed: beyond doubt at any count
    rollout.serve("stable", 30)
    rollout.run()
    state = rollout.rollout()
    assert state["phase"] == "RolledBack" and state["verdict"]["hard"] is True
    assert "error-rate" in state["reason"] and "10 of 20 failed" in state["reason"]
    assert rollout.events()[-1] == "RolledBack"
    assert rollout.deployment("digits-canary") is None  # the stable had ready pods
    stable = rollout.deployment()
    assert _hash(stable) == before and stable is not None and stable["spec"]["replicas"] == 4
    assert [r["artifact"] for r in state["rejected"]] == ["int8"]
    # The same configuration is not tried again until the spec or the measurements change.
    rollout.now += 30
    rollout.run()
    assert rollout.deployment("digits-canary") is None
    assert "not retried" in rollout.rollout()["reason"]
    rollout.edit(maxBatchSize=4)
    rollout.run()
    assert rollout.rollout()["phase"] == "Progressing"


def test_too_few_requests_wait_and_the_deadline_rolls_back(rollout: Rollout) -> None:
    rollout.body["spec"]["rollout"]["progressDeadlineSeconds"] = 25
    rollout.edit(maxBatchSize=8)
    rollout.run()
    rollout.settle("digits")
    rollout.settle("digits-canary")
    for _ in range(2):
        rollout.now += 11
        rollout.serve("canary", 5)
        rollout.run()
        assert rollout.rollout()["verdict"]["outcome"] == "inconclusive"
        assert rollout.rollout()["phase"] == "Progressing"
    assert rollout.rollout()["canary"]["requests"] == 10  # the window stays open: they add up
    rollout.now += 11
    rollout.run()
    state = rollout.rollout()
    assert state["phase"] == "RolledBack" and "progressDeadlineSeconds 25" in state["reason"]


def test_abort_and_promote_by_hand_and_the_annotation_goes(rollout: Rollout) -> None:
    rollout.edit(maxBatchSize=8)
    rollout.run()
    rollout.kube.objects[KEY]["metadata"]["annotations"] = {names.ROLLOUT_ANNOTATION: "abort"}
    rollout.run()
    assert rollout.rollout()["phase"] == "RolledBack"
    assert "aborted by hand" in rollout.rollout()["reason"]
    assert names.ROLLOUT_ANNOTATION not in rollout.kube.objects[KEY]["metadata"]["annotations"]
    rollout.settle()
    rollout.edit(maxBatchSize=4)
    rollout.run()
    assert rollout.rollout()["phase"] == "Progressing"
    rollout.kube.objects[KEY]["metadata"]["annotations"] = {names.ROLLOUT_ANNOTATION: "promote"}
    rollout.run()
    assert rollout.rollout()["phase"] == "Promoted"
    assert rollout.rollout()["history"][-1]["reason"].startswith("promoted by hand")


def test_a_restarted_operator_resumes_at_the_same_step(rollout: Rollout) -> None:
    rollout.edit(maxBatchSize=16)
    rollout.run()
    rollout.settle("digits")
    rollout.settle("digits-canary")
    before = rollout.rollout()
    rollout.ctx = rollout.context()  # the operator restarted: its windows are gone
    rollout.run()
    after = rollout.rollout()
    assert (after["phase"], after["step"], after["startedTime"]) == (
        before["phase"],
        before["step"],
        before["startedTime"],
    )
    # Its pods came up after the window opened: they count from zero, as before the restart.
    rollout.now += 11
    rollout.serve("canary", 60)
    rollout.serve("stable", 60)
    rollout.run()
    assert rollout.rollout()["step"] == 1 and rollout.rollout()["canary"]["requests"] == 60


def test_a_wrong_canary_fails_the_held_out_gate_at_once(
    rollout: Rollout, tmp_path: pathlib.Path
) -> None:
    """With model.evaluation the held-out set goes through one canary pod, once per canary
    configuration; under the accuracy floor the choice was judged against is a hard failure."""
    heldout = tmp_path / "heldout.npz"
    heldout.write_bytes(b"stand-in: the score below is the test's, the file is only fetched")
    rollout.body["spec"]["model"]["evaluation"] = {"uri": heldout.as_uri()}
    asked: list[tuple[str, str | None]] = []

    def score(
        spec: models.GeoDeploymentSpec, url: str, stable: str | None, path: str
    ) -> models.MeasuredAccuracy:
        assert pathlib.Path(path).read_bytes() == heldout.read_bytes()
        asked.append((url, stable))
        return models.MeasuredAccuracy(metric="accuracy", value=0.11, samples=540)

    rollout.ctx.scores = canary.Scores(score)
    rollout.run()  # the evaluation set is a spec change, but the pods' configuration is not
    assert rollout.deployment("digits-canary") is None
    rollout.edit(maxBatchSize=8)
    rollout.run()
    rollout.settle("digits")
    rollout.settle("digits-canary")
    for pod in ("digits-0", "digits-canary-0"):
        meta = rollout.kube.objects[("Pod", "ml", pod)]["metadata"]
        meta["annotations"][names.INFERENCE_URL_ANNOTATION] = f"{pod}:8000"
    rollout.run()  # a ready canary pod: its scoring starts, off the reconcile path
    rollout.ctx.scores.jobs.wait()
    rollout.now += 11
    rollout.serve("canary", 10)  # under minRequests: the accuracy gate needs no traffic
    rollout.run()
    state = rollout.rollout()
    assert state["phase"] == "RolledBack" and state["verdict"]["hard"] is True
    assert "accuracy" in state["reason"] and "0.11" in state["reason"]
    assert state["canary"]["accuracy"] == 0.11 and state["canary"]["samples"] == 540
    assert asked == [("digits-canary-0:8000", "digits-0:8000")]


def _scored_rollout(rollout: Rollout, tmp_path: pathlib.Path) -> list[str]:
    """A canary with model.evaluation whose scorer, as the real one does, sends its
    batches through the canary pod's Triton (68 requests: 540 rows in batches of 8)."""
    heldout = tmp_path / "heldout.npz"
    heldout.write_bytes(b"stand-in: only fetched")
    rollout.body["spec"]["model"]["evaluation"] = {"uri": heldout.as_uri()}
    asked: list[str] = []

    def score(
        spec: models.GeoDeploymentSpec, url: str, stable: str | None, path: str
    ) -> models.MeasuredAccuracy:
        asked.append(url)
        pod = url.removesuffix(":8000")
        s, f, _ = rollout.pods.counters[pod]
        rollout.pods.counters[pod] = (s + 68, f, 40.0)  # batches of 8: a slower p99
        return models.MeasuredAccuracy(metric="accuracy", value=0.97, samples=540)

    rollout.ctx.scores = canary.Scores(score)
    rollout.ctx.__post_init__()
    rollout.edit(maxBatchSize=8)
    rollout.run()
    rollout.settle("digits")
    rollout.settle("digits-canary")
    for key, pod in rollout.kube.objects.items():
        if key[0] == "Pod":
            pod["metadata"]["annotations"][names.INFERENCE_URL_ANNOTATION] = f"{key[2]}:8000"
    return asked


def test_the_operators_own_scoring_requests_pass_no_traffic_gate(
    rollout: Rollout, tmp_path: pathlib.Path
) -> None:
    """Issue 31.1: with no user traffic the scorer's 68 requests (minRequests 50) passed
    the step. The window now counts from the scorer's end, and the scored pod's p99 (the
    batches are in Triton's summary) waits P99_SETTLE_SECONDS."""
    asked = _scored_rollout(rollout, tmp_path)
    for _ in range(3):  # no user traffic at all: never a pass
        rollout.now += 11
        rollout.run()
        rollout.ctx.scores.jobs.wait()
        state = rollout.rollout()
        assert (state["phase"], state["step"]) == ("Progressing", 0), state["reason"]
    assert asked == ["digits-canary-0:8000"]
    assert state["canary"]["requests"] == 0 and state["canary"]["accuracy"] == 0.97
    assert "inconclusive" in state["reason"]
    rollout.serve("canary", 60)  # users now: counted, the scorer's batches not
    rollout.serve("stable", 180)
    rollout.now += 11
    rollout.run()
    state = rollout.rollout()
    assert state["canary"]["requests"] == 60 and state["canary"].get("p99Ms") is None
    assert state["step"] == 0 and "no p99 for the canary" in state["reason"]
    rollout.now += canary.P99_SETTLE_SECONDS
    rollout.serve("canary", 60, p99=5.0)
    rollout.serve("stable", 180)
    rollout.run()
    assert rollout.rollout()["step"] == 1, rollout.rollout()["reason"]


def test_a_held_out_fetch_that_fails_is_said_and_retried_off_the_reconcile(
    rollout: Rollout, tmp_path: pathlib.Path
) -> None:
    """Issue 31.2: the fetch runs on the jobs' pool; the reconcile answers at once with
    why there is no score, and the failure is retried after a back-off."""
    _scored_rollout(rollout, tmp_path)
    rollout.body["spec"]["model"]["evaluation"] = {"uri": (tmp_path / "missing.npz").as_uri()}
    rollout.run()
    rollout.ctx.scores.jobs.wait()
    rollout.now += 11
    rollout.serve("canary", 60)
    rollout.serve("stable", 180)
    rollout.run()
    state = rollout.rollout()
    assert state["phase"] == "Progressing" and state["canary"].get("accuracy") is None
    assert rollout.ctx.requeues.pending(("ml", "digits")) is not None
    words = rollout.ctx.scores.score(
        ("ml", "digits"),
        state["canaryHash"],
        models.parse_spec(rollout.body["spec"]),
        rollout.kube.list("v1", "Pod", "ml", f"{names.OWNER_LABEL}=digits"),
    )
    assert isinstance(words, str) and "failed" in words and "retrying in" in words


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("frobnicate", "'frobnicate' is not an action: the accepted values are promote and abort"),
        ("promote", "no canary is running to promote"),
        ("abort", "no canary is running to abort"),
    ],
)
def test_a_rollout_annotation_not_acted_on_gets_a_warning_and_goes(
    rollout: Rollout, value: str, words: str
) -> None:
    """Issue 31.6: a typo, or promote/abort with no canary, was dropped without a word."""
    rollout.kube.objects[KEY]["metadata"]["annotations"] = {names.ROLLOUT_ANNOTATION: value}
    before = copy.deepcopy(rollout.rollout())
    rollout.run()
    warnings = [(r, m) for t, r, m in rollout.kube.events if t == "Warning"]
    assert [r for r, _ in warnings] == ["RolloutActionRefused"]
    assert words in warnings[0][1] and names.ROLLOUT_ANNOTATION in warnings[0][1]
    assert names.ROLLOUT_ANNOTATION not in rollout.kube.objects[KEY]["metadata"]["annotations"]
    assert rollout.rollout()["phase"] == before["phase"] == "Promoted"
    assert rollout.deployment("digits-canary") is None


def test_a_typo_during_a_rollout_changes_nothing_but_says_so(rollout: Rollout) -> None:
    rollout.edit(maxBatchSize=8)
    rollout.run()
    rollout.kube.objects[KEY]["metadata"]["annotations"] = {names.ROLLOUT_ANNOTATION: "promot"}
    rollout.run()
    assert rollout.rollout()["phase"] == "Progressing"
    assert [r for t, r, _ in rollout.kube.events if t == "Warning"] == ["RolloutActionRefused"]
