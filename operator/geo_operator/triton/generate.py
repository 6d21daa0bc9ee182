"""A client of Triton's ``generate_stream``, as clients of its vLLM backend write one: the
server-sent events of one stream, each with the moment it arrived (for the time to first
token and the gaps between tokens). Used by the tuning Job's `geo tune-llm`, the
generative e2e story, the demo and e2e/bench_llm.py."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any


def stream(
    http: str, model: str, prompt: str, timeout: float = 120, **fields: Any
) -> Iterator[tuple[float, dict[str, Any]]]:
    """POST ``/v2/models/<model>/generate_stream`` with ``text_input`` and ``stream`` true
    (``fields`` beside them, e.g. ``parameters={"max_tokens": 16}``); yields
    (perf_counter at arrival, the event's JSON) per event."""
    body = {"text_input": prompt, "stream": True, **fields}
    request = urllib.request.Request(
        f"http://{http}/v2/models/{model}/generate_stream",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for raw in response:
            if raw.startswith(b"data:"):
                yield time.perf_counter(), json.loads(raw[5:])
