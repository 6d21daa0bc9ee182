"""Play the kubelet for kwok's fake nodes: a real `tritonserver` for every running Triton pod.

The local cluster's nodes are kwok fakes: GEO's Triton pods go Running and Ready but
no container runs. This package makes the data plane real on this machine. It watches
the pods GEO manages (label `app.kubernetes.io/managed-by=geo-operator`, one namespace
or all) and, for every pod that is Running with no deletionTimestamp, does what the
pod would do: reads the model repository the operator rendered into the pod's
`model-config` ConfigMap, fetches the artifact named by the `fetch-artifact` init
container's `ARTIFACT_URI` (through local mirrors: `models.geo.local` exists only in
manifests), and starts `geo_operator.triton.local.TritonServer` on it. When the pod
goes away its server is stopped. When the pod cannot run (a Secret its fetch needs
is missing, the fetch fails, Triton exits at start) its status says so as a kubelet's
would, and the pod is not Ready. A batch-tuning Job's pod gets its Triton sidecar and
the real `geo tune`, and is reported terminated with the tuner's exit code.

Everything it serves is published, after each change, in `<state-dir>/pods.json`
(addresses and readiness per pod) and `<state-dir>/file_sd.json` (Prometheus
file-based service discovery of the ready servers' metrics endpoints). Each served
pod also gets the annotation `geo.ai/metrics-url` pointing at its server's metrics on
127.0.0.1, since kwok's pod IPs are fake and nothing can reach them.

Modules, each with one job:

- `podspec`: what to run for a pod, read from the pod alone (pure; unit-tested in
  tests/e2e_harness/ without a cluster);
- `podstatus`: what a kubelet reports of a pod whose containers cannot run (a missing
  Secret, a failed fetch, a Triton that exits at start; pure, unit-tested too);
- `informer`: list/watch of the pods, reconnecting;
- `worker`: one thread per pod owning its processes (Triton, `geo tune`) and the Job
  pod's lifecycle;
- `publisher`: pods.json and file_sd.json;
- `runner`: `KubeletRunner`, the composition, and the CLI `main`
  (`python e2e/kubelet_runner.py --kubeconfig ... --state-dir ...`).
"""

from e2e.harness.kubelet.podspec import METRICS_URL_ANNOTATION, PodKey, PodSpec
from e2e.harness.kubelet.runner import ARTIFACTS, DEFAULT_MIRRORS, KubeletRunner, main
from e2e.harness.kubelet.worker import ServerInfo

__all__ = [
    "ARTIFACTS",
    "DEFAULT_MIRRORS",
    "METRICS_URL_ANNOTATION",
    "KubeletRunner",
    "PodKey",
    "PodSpec",
    "ServerInfo",
    "main",
]
