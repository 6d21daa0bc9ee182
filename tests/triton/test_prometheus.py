"""Real Prometheus (Debian's) scraping the real tritonserver: the operator's queries."""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from e2e.prometheus_local import Prometheus

from geo_operator.triton import local, prometheus

pytestmark = pytest.mark.triton


def test_query_all_reads_qps_and_p99_then_names_the_outage(
    server: local.TritonServer, artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    file_sd = tmp_path / "targets.json"
    file_sd.write_text(
        json.dumps(
            [
                {
                    "targets": [f"127.0.0.1:{server.metrics_port}"],
                    "labels": {"namespace": "ml", "geodeployment": "digits", "pod": "digits-0"},
                }
            ]
        )
    )
    x = np.load(artifacts / "heldout.npz")["x"]
    client = httpclient.InferenceServerClient(server.http_url)
    with Prometheus(tmp_path / "prom", file_sd) as prom:
        sent, started = 0, time.monotonic()
        load: prometheus.Load | None = None
        while time.monotonic() - started < 45:
            for i in range(20):  # ~20 requests per pass, paced below
                tensor = httpclient.InferInput("input", [1, 64], "FP32")
                tensor.set_data_from_numpy(x[i : i + 1])
                client.infer("digits", [tensor])
                sent += 1
            time.sleep(0.2)
            load = prometheus.query_all(prom.url).get(("ml", "digits"))
            rate = sent / (time.monotonic() - started)
            # rate(...[1m]) needs a few scrapes of the rising counter to settle.
            if load and load.qps and 0.3 * rate < load.qps < 3 * rate:
                break
        elapsed = time.monotonic() - started
        assert load is not None and load.pods_up == 1
        assert load.qps is not None and 0.3 * sent / elapsed < load.qps < 3 * sent / elapsed
        assert load.p99_ms is not None and 0 < load.p99_ms < 1000
        assert load.queued is not None and load.queued >= 0  # the pending-request gauge
    client.close()
    with pytest.raises(prometheus.PrometheusError, match="Prometheus at"):
        prometheus.query_all(prom.url, timeout=2)


def test_track_figures_group_a_rollout_by_track_and_the_loop_ignores_the_canary_p99(
    server: local.TritonServer, artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The one server is a canary pod here: its requests are the canary's in the analysis,
    and the autoscaler's p99 (the stable's alone) does not see it."""
    file_sd = tmp_path / "targets.json"
    labels = {"namespace": "ml", "geodeployment": "digits", "pod": "digits-canary-0"}
    target = {"targets": [f"127.0.0.1:{server.metrics_port}"], "labels": labels}
    file_sd.write_text(json.dumps([{**target, "labels": {**labels, "track": "canary"}}]))
    x = np.load(artifacts / "heldout.npz")["x"]
    client = httpclient.InferenceServerClient(server.http_url)
    with Prometheus(tmp_path / "prom", file_sd) as prom:
        started = time.monotonic()
        found: dict[str, prometheus.TrackLoad] = {}
        sent = 0
        while time.monotonic() - started < 45:
            for i in range(20):
                tensor = httpclient.InferInput("input", [1, 64], "FP32")
                tensor.set_data_from_numpy(x[i : i + 1])
                client.infer("digits", [tensor])
                sent += 1
            time.sleep(0.2)
            window = round(time.monotonic() - started) + 1
            found = prometheus.track_figures(prom.url, "ml", "digits", window)
            if found["canary"].requests >= 100:
                break
        assert 100 <= found["canary"].requests <= 3 * sent, (found, sent)
        assert found["canary"].errors == 0 and found["canary"].p99_ms is not None
        assert found["stable"].requests == 0 and found["stable"].p99_ms is None
        load = prometheus.query_all(prom.url).get(("ml", "digits"))
        assert load is not None and load.pods_up == 1 and load.p99_ms is None
    client.close()
