"""The e2e harness: the local cluster, GEO on it, and the kubelet runner.

- `e2e.harness` (this package, from `cluster.py`): `Cluster`, `up()`,
  `install_chart()`, `OperatorProcess`, `example()`, `wait_for()` and the
  constants — what the tests and `e2e/demo.py` import;
- `e2e.harness.fixtures`: the pytest fixtures on top (e2e/conftest.py registers them);
- `e2e.harness.kubelet`: the kubelet runner (real Triton per kwok pod);
- `e2e.harness.invariants`: what must hold in a namespace after any fault.
"""

from e2e.harness.cluster import (
    CHART,
    CLUSTER_SCRIPTS,
    CONTEXT,
    CRD,
    EXAMPLE,
    OPERATOR_NAMESPACE,
    RELEASE,
    ROOT,
    SERVICE_ACCOUNT,
    Cluster,
    NotTheTestCluster,
    OperatorProcess,
    chart_as_installed,
    delete_namespaces,
    down,
    example,
    free_port,
    fresh_namespace,
    install_chart,
    is_up,
    lib,
    restart_control_plane,
    up,
    wait_for,
)

__all__ = [
    "CHART",
    "CLUSTER_SCRIPTS",
    "CONTEXT",
    "CRD",
    "EXAMPLE",
    "OPERATOR_NAMESPACE",
    "RELEASE",
    "ROOT",
    "SERVICE_ACCOUNT",
    "Cluster",
    "NotTheTestCluster",
    "OperatorProcess",
    "chart_as_installed",
    "delete_namespaces",
    "down",
    "example",
    "free_port",
    "fresh_namespace",
    "install_chart",
    "is_up",
    "lib",
    "restart_control_plane",
    "up",
    "wait_for",
]
