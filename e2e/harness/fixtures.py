"""The e2e tests' pytest fixtures (registered by e2e/conftest.py).

Session-wide: `cluster` (brought up, and down again only if this session started
it), `chart` (a fresh `helm install`), `operator_process` (one `geo run`). Per
test: `operator` (that process, started again with a fresh token if an earlier
test left it stopped), `namespace` (fresh, deleted afterwards) and `runner` (the
kubelet runner for that namespace; `@pytest.mark.all_namespaces` for all).

Tests that break shared state take the fixture that restores it, so that every
file passes alone and in any order: `killable_operator` (started again if the
test left it dead), `control_plane_restart` (kube-apiserver or etcd; waits for the API server
to be ready again), `uninstallable_chart` (the chart reinstalled with its defaults if the
test left it otherwise, and the operator restarted with a new ServiceAccount
token, since a reinstall voids the old one).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator

import pytest
from e2e.harness.cluster import (
    Cluster,
    NotTheTestCluster,
    OperatorProcess,
    chart_as_installed,
    down,
    fresh_namespace,
    install_chart,
    is_up,
    restart_control_plane,
    up,
    wait_for,
)
from e2e.harness.kubelet import KubeletRunner

ALL_NAMESPACES = "all_namespaces"
MARKERS = [f"{ALL_NAMESPACES}: the `runner` fixture serves every namespace, not the test's"]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Bring the cluster up (builds binaries on a cold cache); take it down
    afterwards only if this session started it (a demo cluster stays)."""
    was_up = is_up()
    try:
        cluster_ = up()
    except NotTheTestCluster as error:
        pytest.exit(f"refusing to run e2e tests: {error}", returncode=3)
    yield cluster_
    if not was_up:
        down()


@pytest.fixture(scope="session")
def chart(cluster: Cluster) -> Cluster:
    """GEO installed with `helm install`, exactly as the README says."""
    install_chart(cluster)
    return cluster


@pytest.fixture(scope="session")
def operator_process(
    chart: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The session's `geo run`; tests take `operator`, which makes sure it runs."""
    proc = OperatorProcess(chart, tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()
    print(f"\n--- operator log tail ---\n{proc.tail(20)}")


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    """The session's operator, started again if an earlier test left it stopped."""
    if not operator_process.running():
        # Whatever stopped it may have reinstalled the chart, voiding the old token.
        operator_process.restart(fresh_token=True)
    return operator_process


@pytest.fixture
def killable_operator(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The operator, for a test that kills it: running again afterwards."""
    yield operator
    if not operator.running():
        operator.start()


@pytest.fixture
def control_plane_restart(cluster: Cluster) -> Iterator[Callable[..., None]]:
    """Restarts kube-apiserver (or ``component="etcd"``) when called (``downtime=`` seconds
    down); afterwards the API server is ready again, whatever happened."""
    yield restart_control_plane
    wait_for(cluster.ready, "kube-apiserver /readyz after its restart", timeout=90)


@pytest.fixture
def uninstallable_chart(chart: Cluster, operator: OperatorProcess) -> Iterator[Cluster]:
    """The chart, for a test that upgrades, uninstalls or reinstalls it: afterwards it is
    installed with its defaults again and the operator runs with a valid token."""
    yield chart
    if not chart_as_installed(chart):
        install_chart(chart)
    # A reinstall (the test's or ours) recreated the ServiceAccount: new token.
    operator.restart(fresh_token=True)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = "e2e-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    fresh_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def runner(
    cluster: Cluster, namespace: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> Iterator[KubeletRunner]:
    """The kubelet runner: a real Triton for every running pod of the test's namespace
    (of every namespace with `@pytest.mark.all_namespaces`); all stopped afterwards."""
    everywhere = request.node.get_closest_marker(ALL_NAMESPACES) is not None
    with KubeletRunner(
        cluster.kubeconfig, tmp_path / "kubelet", namespace=None if everywhere else namespace
    ) as kubelet:
        yield kubelet
