"""A generative canary's held-out gate, through the serving pods themselves: the next
token each gives on prompts cut from the held-out text, canary against stable.

Triton's generate endpoint returns text, not logits, so the perplexity and KL divergence
the tuning Job measures (`llm_quality`, llama.cpp on the GGUFs) can't be had from a
serving pod; the top-1 next token can: each prompt asks ``max_tokens`` 1 with greedy
sampling, and the score is the fraction of prompts on which the canary's token is the
stable's (llama.cpp's "top-1 agreement", measured on the served engine, against what
serves now rather than the reference). The prompts are ``count`` passages of the text,
evenly spaced, each ending at a line break or a space so both see a whole last word.
"""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request

from geo_operator.api import models

PROMPTS = 64  # the gate's sample: 64 prompts, both tracks, a few seconds here
PROMPT_CHARS = 300  # at most; `prompt_chars` fits them to a slot's context


def prompt_chars(context: int | None) -> int:
    """Prompt length for a slot of ``context`` tokens: half of it at 1.5 characters a token
    (code in a small vocabulary: the pycode family's is 1.65), at most PROMPT_CHARS."""
    return min(PROMPT_CHARS, (context or 256) * 3 // 4)


class AgreementError(ValueError):
    """The held-out text can't be used; the message says why."""


def prompts(text: str, count: int = PROMPTS, chars: int = PROMPT_CHARS) -> list[str]:
    """``count`` passages of ``text`` (at most ``chars`` long), evenly spaced, each cut
    just after whitespace."""
    if len(text.strip()) < 2 * chars:
        raise AgreementError(
            f"the held-out text is {len(text)} characters: too short for prompts of {chars}"
        )
    out = []
    for i in range(count):
        end = chars + (len(text) - chars) * i // max(1, count - 1)
        cut = max(text.rfind(" ", 0, end), text.rfind("\n", 0, end)) + 1
        start = max(0, (cut or end) - chars)
        passage = text[start : cut or end]
        if passage.strip():
            out.append(passage)
    return out


def next_token(http: str, model: str, prompt: str, timeout: float = 60) -> str:
    """The model's greedy next token's text (``max_tokens`` 1, the prompt left out)."""
    body = {
        "text_input": prompt,
        "exclude_input_in_output": True,
        "parameters": {"max_tokens": 1, "temperature": 0},
    }
    request = urllib.request.Request(
        f"http://{http}/v2/models/{model}/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return str(json.loads(response.read())["text_output"])


def against(
    canary: str,
    stable: str,
    model: str,
    path: str,
    count: int = PROMPTS,
    chars: int = PROMPT_CHARS,
) -> models.MeasuredAccuracy:
    """The canary's next-token agreement with the stable on the held-out text at
    ``path`` (two requests at a time per pod: the gate must not crowd out users)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as error:
        raise AgreementError(f"the held-out text is not UTF-8: {error}") from error
    batch = prompts(text, count, chars)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda p: next_token(canary, model, p), batch))
        want = list(pool.map(lambda p: next_token(stable, model, p), batch))
    agreed = sum(a == b for a, b in zip(got, want, strict=True))
    return models.MeasuredAccuracy(
        metric=models.EvaluationMetric.AGREEMENT,
        value=round(agreed / len(batch), 4),
        samples=len(batch),
        reference="stable",
        agreement=round(agreed / len(batch), 4),
    )
