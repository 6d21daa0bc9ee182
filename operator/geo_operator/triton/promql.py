"""The PromQL GEO asks of Triton's series, as text: one source for the autoscaler's
queries (`triton.prometheus`) and the alerting rules (`builders.alerts`).

Pure strings, no client: a pure layer may import this. Every expression groups by
the `namespace` and `geodeployment` labels Prometheus attaches to Triton's series
(see `triton.prometheus` for the relabelling); `{window}` is filled in by the caller.
"""

from __future__ import annotations

from geo_operator.triton import metrics

BY = "namespace, geodeployment"

QPS_QUERY = f"sum by ({BY}) (rate(nv_inference_request_success[{{window}}s]))"


def p99(by: str, where: str) -> str:
    """The worst pod's p99 (microseconds) by ``by``: the request summary, or with the
    response cache on (no request summary) the sum of its stages' summaries
    (`metrics.STAGES`)."""
    quantile = '{quantile="0.99",' + where + "}"
    stages = " + ".join(stage + quantile for stage in metrics.STAGES)
    return f"max by ({by}) (nv_inference_request_summary_us{quantile}) or max by ({by}) ({stages})"


# The stable track's (a canary's p99 is the rollout's to judge); no track label: stable.
P99_QUERY = p99(BY, 'track!="canary"')
_HITS = f"sum by ({BY}) (rate(nv_cache_num_hits_per_model[{{window}}s]))"
_MISSES = f"sum by ({BY}) (rate(nv_cache_num_misses_per_model[{{window}}s]))"
CACHE_QUERY = f"{_HITS} / ({_HITS} + {_MISSES})"
REJECTED_QUERY = (
    f'sum by ({BY}) (rate(nv_inference_request_failure{{{{reason="REJECTED"}}}}[{{window}}s]))'
)
PENDING_QUERY = f"sum by ({BY}) (nv_inference_pending_request_count)"
UP_QUERY = f'count by ({BY}) (up{{geodeployment!=""}} == 1)'
_FAILED = f"sum by ({BY}) (rate(nv_inference_request_failure[{{window}}s]))"
_SUCCEEDED = f"sum by ({BY}) (rate(nv_inference_request_success[{{window}}s]))"
# Failed requests per request, every reason (refused, timed out, backend errors): what
# the clients saw fail. No traffic: 0/0, no value.
ERROR_RATIO_QUERY = f"{_FAILED} / ({_SUCCEEDED} + {_FAILED})"
