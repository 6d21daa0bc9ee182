"""Parsing Triton's metrics (a scrape recorded from the real tritonserver here) and rates."""

from __future__ import annotations

import dataclasses

import pytest
from tests.support.paths import FIXTURES

from geo_operator.triton import metrics

TEXT = (FIXTURES / "triton_metrics.txt").read_text()


def test_parse_real_scrape() -> None:
    scrape = metrics.parse(TEXT, "digits", time=10.0)
    assert scrape.success == 20 and scrape.inferences == 80 and scrape.executions == 20
    assert scrape.request_us == 33075 and scrape.p99_us == 595
    assert scrape.pending == 0  # Triton's nv_inference_pending_request_count gauge


def test_unknown_model_is_missing_not_zero() -> None:
    with pytest.raises(metrics.MetricsError, match="no nv_inference_request_success"):
        metrics.parse(TEXT, "other-model", time=0.0)


def test_garbage_is_an_error() -> None:
    with pytest.raises(metrics.MetricsError):
        metrics.parse("this is { not metrics", "digits", time=0.0)


def test_rates_between_scrapes() -> None:
    before = metrics.parse(TEXT, "digits", time=10.0)
    after = dataclasses.replace(
        before,
        time=12.0,
        success=220,
        inferences=880,
        executions=120,
        request_us=before.request_us + 200 * 1500,
    )
    r = metrics.rates(before, after)
    assert r is not None
    assert r.qps == 100 and r.items_per_second == 400
    assert r.avg_latency_ms == pytest.approx(1.5) and r.avg_batch == 8
    assert r.p99_ms == pytest.approx(0.595)
    restarted = dataclasses.replace(after, success=3)
    assert metrics.rates(after, restarted) is None


def test_aggregate_sums_qps_and_takes_worst_p99() -> None:
    a = metrics.PodRates(100, 100, 2.0, 0.1, 1.0, 5.0)
    b = metrics.PodRates(300, 600, 4.0, 0.2, 2.0, 9.0)
    total = metrics.aggregate([a, b])
    assert total.qps == 400 and total.p99_ms == 9.0
    assert total.avg_latency_ms == pytest.approx(3.5)
    assert total.avg_batch == pytest.approx((1 * 100 + 2 * 600) / 700)
    assert total.queued is None  # a pod without the pending gauge: the backlog is unknown
    queued = metrics.aggregate(
        [dataclasses.replace(a, pending=3.0), dataclasses.replace(b, pending=4.0)]
    )
    assert queued.queued == 7.0


def test_prometheus_queries_use_the_rate_window() -> None:
    from geo_operator.triton import prometheus

    assert "[6s]" in prometheus.QPS_QUERY.format(window=6)


CACHED = (FIXTURES / "triton_metrics_cache.txt").read_text()


def test_with_the_cache_on_the_p99_is_the_stages_sum_and_hits_are_counted() -> None:
    # Recorded from the real tritonserver serving manifests/examples/digits-levers.yaml:
    # with the response cache on Triton 2.51 publishes no request summary at all.
    assert "nv_inference_request_summary_us" not in CACHED
    scrape = metrics.parse(CACHED, "digits", time=0.0)
    stages = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in CACHED.splitlines()
        if 'quantile="0.99"' in line
    }
    assert scrape.p99_us == sum(stages[s] for s in metrics.STAGES)
    assert (scrape.cache_hits, scrape.cache_misses) == (4, 1)
    after = dataclasses.replace(scrape, time=2.0, success=scrape.success + 10, cache_hits=13)
    rates = metrics.rates(scrape, after)
    assert rates is not None and rates.cache_hit_ratio == pytest.approx(9 / 9)
    # No cache in the scrape: no ratio, rather than a ratio of zero.
    plain = metrics.parse(TEXT, "digits", time=0.0)
    assert plain.cache_hits is None
    no_cache = metrics.rates(plain, dataclasses.replace(plain, time=1.0))
    assert no_cache is not None and no_cache.cache_hit_ratio is None


def test_requests_refused_after_their_queue_timeout_are_rejected_qps() -> None:
    text = TEXT.replace(
        'nv_inference_request_failure{model="digits",reason="REJECTED",version="1"} 0',
        'nv_inference_request_failure{model="digits",reason="REJECTED",version="1"} 300',
    )
    assert text != TEXT
    before = metrics.parse(TEXT, "digits", time=0.0)
    after = metrics.parse(text, "digits", time=0.0)
    assert before.rejected == 0 and after.rejected == 300 and after.failure == 300
    rates = metrics.rates(before, dataclasses.replace(after, time=10.0))
    assert rates is not None and rates.rejected_qps == 30.0
    total = metrics.aggregate([rates, rates])
    assert total.rejected_qps == 60.0


def test_the_cache_hit_ratio_of_pods_is_weighted_by_their_lookups() -> None:
    base = metrics.PodRates(10, 10, 1.0, 0.1, 1.0, 1.0)
    busy = dataclasses.replace(base, cache_hit_ratio=0.9, cache_lookups=90)
    quiet = dataclasses.replace(base, cache_hit_ratio=0.0, cache_lookups=10)
    assert metrics.aggregate([busy, quiet]).cache_hit_ratio == pytest.approx(0.81)
    assert metrics.aggregate([base]).cache_hit_ratio is None
