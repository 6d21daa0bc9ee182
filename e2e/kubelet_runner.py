"""Run the e2e kubelet runner (e2e/harness/kubelet/) on its own, until SIGINT/SIGTERM:

    python e2e/kubelet_runner.py --kubeconfig e2e/.cluster/kubeconfig --state-dir out/kubelet

It serves a real tritonserver for every running GEO Triton pod of the cluster and
publishes them in `<state-dir>/pods.json` and `<state-dir>/file_sd.json`; see
`e2e/harness/kubelet/__init__.py` for what it does, and its modules for how.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from e2e.harness.kubelet.runner import main

if __name__ == "__main__":
    sys.exit(main())
