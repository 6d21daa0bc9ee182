"""`make demo`: GEO end to end on this machine, as a user would see it.

1. the example model's quantized artifacts (trained and measured here);
2. a local Kubernetes cluster (e2e/cluster/up.sh: built from Go modules on
   first use, then cached);
3. `helm install geo-operator charts/geo-operator`;
4. the operator (`geo run`) as the chart's ServiceAccount;
5. `kubectl apply -f manifests/examples/digits.yaml` until Ready, with the
   printer columns, conditions and Events;
6. the model repository the operator put in its ConfigMap, served by the real
   tritonserver: held-out digits classified through Triton, p99 from its metrics.

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
import time
from typing import Any

import numpy as np
import tritonclient.http as httpclient
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from conftest import (  # noqa: E402  (the e2e helpers are the demo's helpers too)
    CLUSTER_SCRIPTS,
    CONTEXT,
    EXAMPLE,
    OPERATOR_NAMESPACE,
    RELEASE,
    Cluster,
    OperatorProcess,
    _lib,
    wait_for,
)
from geo_operator.api import models  # noqa: E402
from geo_operator.triton import local, repository  # noqa: E402

ARTIFACTS = ROOT / "examples" / "digits" / "artifacts"
OUT = ROOT / "out" / "demo"
NAMESPACE = "demo"


def step(n: int, text: str) -> None:
    print(f"\n\033[1m[{n}/6] {text}\033[0m", flush=True)


def show(cmd: list[str], out: str) -> None:
    print("$ " + " ".join(cmd))
    print(out.rstrip())


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
    subprocess.run(["bash", str(CLUSTER_SCRIPTS / "up.sh")], check=True)
    directory = pathlib.Path(_lib('echo "$GEO_CLUSTER_DIR"'))
    cluster = Cluster(
        directory / "kubeconfig", _lib("geo_bin kubectl"), _lib("geo_bin helm"), directory
    )
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    assert config["current-context"] == CONTEXT
    show(["kubectl", "get", "nodes"], cluster.kubectl("get", "nodes").stdout)

    step(3, "helm install geo-operator charts/geo-operator -n geo-system --create-namespace")
    cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait", check=False)
    out = cluster.helm(
        "install",
        RELEASE,
        "charts/geo-operator",
        "-n",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    )
    print(out.stdout.split("NOTES:")[0].rstrip())

    step(4, "The operator: `geo run` as the chart's ServiceAccount (token from TokenRequest)")
    operator = OperatorProcess(cluster, pathlib.Path(tempfile.mkdtemp(prefix="geo-demo-")))
    operator.log = OUT / "operator.log"
    operator.log.write_text("")
    operator.start()
    print(f"operator healthy on :{operator.port}; log: {operator.log.relative_to(ROOT)}")

    try:
        step(5, f"kubectl apply -f {EXAMPLE.relative_to(ROOT)} -n {NAMESPACE}")
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")
        cluster.kubectl("create", "namespace", NAMESPACE)
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
            print(f"  {c['type']:<17}{c['status']:<6}{c['reason']:<14}{c['message']}")
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
    finally:
        operator.stop()

    step(6, "The operator's model repository (its ConfigMap) served by the real tritonserver")
    cm = cluster.json("get", "configmap", "digits-model", "-n", NAMESPACE)
    spec = models.parse_spec(body["spec"])
    chosen = next(
        a for a in spec.model.artifacts if a.name == body["status"]["selectedArtifact"]["name"]
    )
    repo = OUT / "model-repository"
    subprocess.run(["rm", "-rf", str(repo)], check=True)
    repository.materialize(
        cm["data"],
        model_name=spec.model.name,
        artifact_format=chosen.format,
        uri=chosen.uri,
        repository=repo,
        mirrors={"http://models.geo.local/digits/": f"file://{ARTIFACTS}/"},
    )
    with local.TritonServer(repo, log_path=OUT / "triton.log") as triton:
        client = httpclient.InferenceServerClient(triton.http_url)
        cfg = client.get_model_config("digits")
        print(
            f"tritonserver ready in {triton.startup_seconds:.1f}s; Triton reports "
            f"max_batch_size={cfg['max_batch_size']}, dynamic_batching="
            f"{json.dumps(cfg.get('dynamic_batching', {}))}"
        )
        held = np.load(ARTIFACTS / "heldout.npz")
        x, y = held["x"], held["y"]
        labels = []
        for i in range(0, len(x), 32):
            tensor = httpclient.InferInput("input", [len(x[i : i + 32]), 64], "FP32")
            tensor.set_data_from_numpy(x[i : i + 32])
            result = client.infer("digits", [tensor])
            labels.append(np.asarray(result.as_numpy("label")).reshape(-1))
        accuracy = float((np.concatenate(labels) == y).mean())
        print(
            f"{len(x)} held-out digits through Triton ({chosen.name}): accuracy {accuracy:.4f} "
            f"(declared {chosen.accuracy:.4f})"
        )
        client.close()
    print(
        "\nDone. The cluster is still up: `. e2e/cluster/env.sh; kubectl get geod -A`; "
        "remove it with `e2e/cluster/down.sh`."
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
