"""`make demo`: GEO end to end on this machine, as a user would see it.

1. the example model's quantized artifacts (trained and measured here);
2. a local Kubernetes cluster (e2e/cluster/up.sh: built from Go modules on
   first use, then cached);
3. `helm install geo-operator charts/geo-operator`;
4. the operator (`geo run`) as the chart's ServiceAccount;
5. `kubectl apply -f manifests/examples/digits.yaml` until Ready, with the
   printer columns, conditions and Events;
6. a real tritonserver for the pod (the e2e kubelet runner plays the kubelet),
   on the model repository from the operator's ConfigMap: held-out digits
   classified through it;
7. autoscaling with no human in the loop: the autoscaling example, a load that
   rises and falls, a live line per second (QPS, p99, replicas, decisions with
   their reasons) and a PNG plot in out/demo/autoscaling.png;
8. a change goes out as a canary;
9. a generative model: the pycode GGUF family's measured figures, the choice among
   them, and a completion streamed live from llama.cpp in Triton with its time to
   first token and tokens/s.

The cluster stays up afterwards for poking at (`. e2e/cluster/env.sh`);
`e2e/cluster/down.sh` removes it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import tritonclient.http as httpclient

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

# The e2e tests' harness is the demo's too.
from e2e.harness import (
    EXAMPLE,
    ROOT,
    Cluster,
    OperatorProcess,
    fresh_namespace,
    install_chart,
    up,
    wait_for,
)
from e2e.harness.kubelet import KubeletRunner
from e2e.loadgen import Phase, Second, ready_servers
from e2e.loadgen import run as run_load

from geo_operator.triton import generate as llmclient

ARTIFACTS = ROOT / "examples" / "digits" / "artifacts"
AUTOSCALING = ROOT / "manifests" / "examples" / "digits-autoscaling.yaml"
PYCODE = ROOT / "examples" / "pycode" / "artifacts"
PYCODE_EXAMPLE = ROOT / "manifests" / "examples" / "pycode.yaml"
OUT = ROOT / "out" / "demo"
NAMESPACE = "demo"
PHASES = [Phase(15, 8), Phase(45, 55), Phase(50, 3)]


def step(n: int, text: str) -> None:
    print(f"\n\033[1m[{n}/9] {text}\033[0m", flush=True)


def show(cmd: list[str], out: str) -> None:
    print("$ " + " ".join(cmd))
    print(out.rstrip())


def _status(cluster: Cluster) -> dict[str, Any]:
    return (cluster.get("geod", "digits", NAMESPACE) or {}).get("status") or {}


def autoscale(cluster: Cluster, runner: KubeletRunner, x: np.ndarray) -> None:
    """Drive the load, print a line per second, plot the run."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    start = time.monotonic()
    header = ("t", "offered", "done", "p99 ms", "replicas", "ready")
    print("{:>4} {:>7} {:>5} {:>7} {:>8} {:>5}  decision".format(*header))
    # Status is read in its own thread: a kubectl call inside the load generator's
    # event loop would stall the sender.
    latest: dict[str, Any] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            latest.update(status=_status(cluster))

    threading.Thread(target=poll, daemon=True).start()

    def on_second(second: Second) -> None:
        status = latest.get("status") or {}
        decision = status.get("lastDecision") or {}
        stamp = f"{decision.get('time')}{decision.get('action')}{decision.get('to')}"
        new = decision and stamp not in seen
        seen.add(stamp)
        p99 = second.p99_ms
        rows.append(
            {
                "t": second.t,
                "offered": second.offered,
                "completed": second.completed,
                "p99_ms": p99,
                "replicas": status.get("replicas"),
                "ready": status.get("readyReplicas"),
            }
        )
        text = f"{decision.get('action')}: {decision.get('reason')}" if new else ""
        print(
            f"{second.t:>4.0f} {second.offered:>7} {second.completed:>5} "
            f"{(f'{p99:.1f}' if p99 is not None else '-'):>7} "
            f"{status.get('replicas', '-'):>8} {status.get('readyReplicas', '-'):>5}  {text}",
            flush=True,
        )

    try:
        run_load(PHASES, lambda: ready_servers(runner.pods_json, "digits"), x, on_second=on_second)
    finally:
        stop.set()
    print(f"load done in {time.monotonic() - start:.0f}s")
    (OUT / "autoscaling.json").write_text(json.dumps(rows, indent=1))
    _plot(rows, OUT / "autoscaling.png")
    print(
        f"plot: {(OUT / 'autoscaling.png').relative_to(ROOT)}; "
        f"numbers: {(OUT / 'autoscaling.json').relative_to(ROOT)}"
    )
    history = _status(cluster).get("decisions", [])
    print("decisions recorded in status (kubectl get geod digits -o yaml):")
    for d in history:
        print(f"  {d['time']} {d['action']:<9} {d['from']}->{d['to']}  {d['reason']}")


# The change the demo ships as a canary: a longer batcher queue delay, judged quickly.
CANARY_PATCH = {
    "spec": {
        "triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": 300}},
        "rollout": {"steps": [50, 100], "analysisIntervalSeconds": 5, "minRequests": 40},
    }
}


def canary(cluster: Cluster, runner: KubeletRunner, x: np.ndarray) -> None:
    """Ship a configuration change under load; print the rollout as it goes."""
    patch = json.dumps(CANARY_PATCH)
    show(
        ["kubectl", "patch", "geod", "digits", "-n", NAMESPACE, "--type=merge", "-p", patch],
        cluster.kubectl(
            "patch", "geod", "digits", "-n", NAMESPACE, "--type=merge", "-p", patch
        ).stdout,
    )
    seconds: list[Second] = []
    load = threading.Thread(
        target=lambda: seconds.extend(
            run_load([Phase(60, 20)], lambda: ready_servers(runner.pods_json, "digits"), x)
        )
    )
    load.start()
    start, said = time.monotonic(), ""
    while load.is_alive():
        rollout = _status(cluster).get("rollout") or {}
        line = f"{rollout.get('phase')} weight {rollout.get('weight')} %: {rollout.get('reason')}"
        if line != said:
            print(f"{time.monotonic() - start:>4.0f}s {line}", flush=True)
            said = line
        time.sleep(0.5)
    failed = sum(s.errors for s in seconds)
    print(f"load done: {sum(s.offered for s in seconds)} requests sent, {failed} failed")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "geo_operator.cli",
            "rollout",
            "status",
            "digits",
            "-n",
            NAMESPACE,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    show(["geo", "rollout", "status", "digits", "-n", NAMESPACE], out.stdout)


def generative(cluster: Cluster, runner: KubeletRunner) -> None:
    """The pycode family's measured figures, the choice among them, a completion streamed."""
    if not (PYCODE / "measurements.json").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "examples/pycode/make_artifacts.py")], check=True
        )
    measured = json.loads((PYCODE / "measurements.json").read_text())
    print(
        f"a llama-architecture code model trained here on the stdlib's source, quantized by "
        f"llama.cpp; measured on {measured['corpus']['heldOutTokens']} held-out tokens:"
    )
    print(f"{'artifact':<20}{'bytes':>9}{'perplexity':>11}{'KLD':>8}{'agree':>7}{'decode t/s':>11}")
    for name, a in measured["artifacts"].items():
        print(
            f"{name:<20}{a['bytes']:>9}{a['perplexity']:>11.2f}{a['klDivergence']:>8.4f}"
            f"{a['agreement']:>7.3f}{a['decodeTokensPerSecond']:>11,.0f}"
        )
    show(
        ["kubectl", "apply", "-f", str(PYCODE_EXAMPLE.relative_to(ROOT)), "-n", NAMESPACE],
        cluster.kubectl("apply", "-f", str(PYCODE_EXAMPLE), "-n", NAMESPACE).stdout,
    )

    def ready() -> dict[str, Any] | None:
        body = cluster.get("geod", "pycode", NAMESPACE)
        for c in ((body or {}).get("status") or {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                return body
        return None

    body = wait_for(ready, "pycode to become Ready", timeout=120)
    chosen = body["status"]["selectedArtifact"]
    print(f"chosen: {chosen['name']} — {chosen['reason']}")
    wait_for(lambda: ready_servers(runner.pods_json, "pycode"), "a ready llama.cpp Triton", 90)
    info = next(s for s in runner.servers().values() if s.ready and s.geodeployment == "pycode")
    prompt = "def read_config(path):\n    "
    print(f"POST /v2/models/pycode/generate_stream (Triton's vLLM conventions) on {info.http}:")
    print("\n" + prompt, end="", flush=True)
    started = time.perf_counter()
    arrivals = []
    for when, event in llmclient.stream(info.http, "pycode", prompt, parameters={"max_tokens": 96}):
        arrivals.append(when)
        print(event["text_output"], end="", flush=True)
    print()
    if arrivals:
        rate = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-9)
        print(
            f"\n{len(arrivals)} tokens; time to first token {(arrivals[0] - started) * 1000:.1f} "
            f"ms, then {rate:,.0f} tokens/s (measured by this client)"
        )


def _plot(rows: list[dict[str, Any]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    fig, (load_ax, p99_ax, rep_ax) = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    load_ax.plot(t, [r["offered"] for r in rows], label="offered QPS")
    load_ax.plot(t, [r["completed"] for r in rows], label="completed QPS")
    load_ax.set_ylabel("requests/s")
    load_ax.legend(loc="upper right")
    p99_ax.plot(
        t,
        [r["p99_ms"] if r["p99_ms"] is not None else np.nan for r in rows],
        color="tab:red",
        label="client p99",
    )
    p99_ax.axhline(250, color="tab:red", linestyle=":", label="p99 target")
    p99_ax.set_ylabel("ms")
    p99_ax.legend(loc="upper right")
    rep_ax.step(t, [r["replicas"] or 0 for r in rows], where="post", label="replicas")
    rep_ax.step(t, [r["ready"] or 0 for r in rows], where="post", label="ready", linestyle="--")
    rep_ax.set_ylabel("replicas")
    rep_ax.set_xlabel("seconds")
    rep_ax.legend(loc="upper right")
    fig.suptitle("GEO autoscaling the digits model on real Triton servers (local cluster)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    step(1, "Example model: scikit-learn digits MLP, fp32 / fp16 / int8 ONNX, measured here")
    if not (ARTIFACTS / "measurements.json").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "examples/digits/make_artifacts.py")], check=True
        )
    measured = json.loads((ARTIFACTS / "measurements.json").read_text())
    print(f"{'artifact':<9}{'bytes':>9}{'accuracy':>10}{'ms b1':>8}{'ms b32':>8}")
    for v in measured["variants"]:
        print(
            f"{v['variant']:<9}{v['sizeBytes']:>9}{v['accuracy']:>10.4f}"
            f"{v['latencyMsBatch1']:>8.3f}{v['latencyMsBatch32']:>8.3f}"
        )

    step(2, "Local Kubernetes cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    cluster = up()  # refuses a kubeconfig that is not the local test cluster's
    show(["kubectl", "get", "nodes"], cluster.kubectl("get", "nodes").stdout)

    step(3, "helm install geo-operator charts/geo-operator -n geo-system --create-namespace")
    out = install_chart(cluster)
    print(out.stdout.split("NOTES:")[0].rstrip())

    step(4, "The operator: `geo run` as the chart's ServiceAccount (token from TokenRequest)")
    operator = OperatorProcess(cluster, pathlib.Path(tempfile.mkdtemp(prefix="geo-demo-")))
    operator.log = OUT / "operator.log"
    operator.log.write_text("")
    operator.start()
    print(
        f"operator healthy; its metrics on :{operator.metrics_port}; "
        f"log: {operator.log.relative_to(ROOT)}"
    )

    runner: KubeletRunner | None = None
    try:
        step(5, f"kubectl apply -f {EXAMPLE.relative_to(ROOT)} -n {NAMESPACE}")
        fresh_namespace(cluster, NAMESPACE)
        show(
            ["kubectl", "apply", "-f", str(EXAMPLE.relative_to(ROOT)), "-n", NAMESPACE],
            cluster.kubectl("apply", "-f", str(EXAMPLE), "-n", NAMESPACE).stdout,
        )
        started = time.monotonic()

        def ready() -> dict[str, Any] | None:
            body = cluster.get("geod", "digits", NAMESPACE)
            for c in ((body or {}).get("status") or {}).get("conditions", []):
                if c["type"] == "Ready" and c["status"] == "True" and c["reason"] == "Available":
                    return body
            return None

        body = wait_for(ready, "digits to become Ready", timeout=120)
        print(f"Ready after {time.monotonic() - started:.1f}s")
        show(
            ["kubectl", "get", "geod", "-n", NAMESPACE, "-o", "wide"],
            cluster.kubectl("get", "geod", "-n", NAMESPACE, "-o", "wide").stdout,
        )
        show(
            ["kubectl", "get", "deploy,svc,cm,pods", "-n", NAMESPACE],
            cluster.kubectl("get", "deploy,svc,cm,pods", "-n", NAMESPACE).stdout,
        )
        print("conditions:")
        for c in body["status"]["conditions"]:
            print(f"  {c['type']:<17}{c['status']:<6}{c['reason']:<20}{c['message']}")
        events = cluster.json(
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            "involvedObject.kind=GeoDeployment",
        )["items"]
        print("events:")
        for e in events:
            print(f"  {e['type']:<8}{e['reason']:<17}{e['message']}")

        step(6, "Real Triton for the pod: the e2e kubelet runner plays the kubelet's part")
        runner = KubeletRunner(cluster.kubeconfig, OUT / "runner", namespace=NAMESPACE).start()
        wait_for(lambda: ready_servers(runner.pods_json, "digits"), "a ready Triton", timeout=90)
        info = next(s for s in runner.servers().values() if s.ready)
        client = httpclient.InferenceServerClient(info.http)
        cfg = client.get_model_config("digits")
        print(
            f"tritonserver ready in {info.startup_seconds:.1f}s on {info.http}; Triton reports "
            f"max_batch_size={cfg['max_batch_size']}, max_queue_delay="
            f"{cfg['dynamic_batching']['max_queue_delay_microseconds']}us"
        )
        held = np.load(ARTIFACTS / "heldout.npz")
        x, y = held["x"], held["y"]
        labels = []
        for i in range(0, len(x), 32):
            tensor = httpclient.InferInput("input", [len(x[i : i + 32]), 64], "FP32")
            tensor.set_data_from_numpy(x[i : i + 32])
            labels.append(np.asarray(client.infer("digits", [tensor]).as_numpy("label")).ravel())
        client.close()
        chosen = body["status"]["selectedArtifact"]["name"]
        print(
            f"{len(x)} held-out digits through Triton ({chosen}): accuracy "
            f"{float((np.concatenate(labels) == y).mean()):.4f}"
        )

        step(
            7,
            f"Autoscaling, no human in the loop: kubectl apply -f "
            f"{AUTOSCALING.relative_to(ROOT)}; the load rises, then falls",
        )
        show(
            ["kubectl", "apply", "-f", str(AUTOSCALING.relative_to(ROOT)), "-n", NAMESPACE],
            cluster.kubectl("apply", "-f", str(AUTOSCALING), "-n", NAMESPACE).stdout,
        )
        autoscale(cluster, runner, x)

        step(8, "A change goes out as a canary, judged against the stable, promoted by measurement")
        canary(cluster, runner, x)

        step(9, f"A generative model: kubectl apply -f {PYCODE_EXAMPLE.relative_to(ROOT)}")
        generative(cluster, runner)
    finally:
        operator.stop()
        if runner is not None:
            runner.stop()
    print(
        "\nDone. The cluster is still up: `. e2e/cluster/env.sh; kubectl get geod -A`; "
        "remove it with `e2e/cluster/down.sh`."
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    threading.current_thread().name = "demo"
    sys.exit(main())
