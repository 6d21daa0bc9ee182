"""A generative artifact's quality measured on held-out text, the way llama.cpp judges its
own quantizations (``llama-perplexity``, and ``--kl-divergence`` against a reference):

* the text is cut into windows of ``context`` tokens, each starting with the BOS token;
* each window is evaluated in a fresh sequence, and only its second half is scored (the
  first half gives every scored token a context, as llama-perplexity does);
* **perplexity**: exp of the mean negative log-likelihood of the scored tokens;
* against the reference artifact's logits on the same windows: the mean **KL
  divergence** KL(reference || candidate) and the **top-1 agreement** (the fraction of
  scored positions where both pick the same most likely token).

`score` is pure (numpy); `window_logits` runs llama.cpp (llama-cpp-python) on a GGUF;
`measure` does both for a candidate and its reference, `measure_text` from held-out text
(tokenized by the reference's vocabulary); `as_score` turns the figures into the score in
0..1 the accuracy floor applies to (`model.evaluation.metric`). Used by
examples/pycode/make_artifacts.py to make the family's figures, by the tuning Job's `geo
tune-llm`, and by the tests that check them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from geo_operator.api import models

Logits = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Quality:
    perplexity: float
    kl_divergence: float
    agreement: float
    scored_tokens: int


def windows(tokens: Sequence[int], context: int, bos: int) -> list[list[int]]:
    """BOS + ``context - 1`` tokens each, back to back; a short tail is dropped."""
    step = context - 1
    return [[bos, *tokens[i : i + step]] for i in range(0, len(tokens) - step + 1, step)]


def _log_softmax(x: Logits) -> Logits:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))  # type: ignore[no-any-return]


def score(
    logits: Sequence[Logits], reference: Sequence[Logits], batch: Sequence[Sequence[int]]
) -> Quality:
    """Perplexity of ``logits`` on the windows' second halves, and its KL divergence from
    and top-1 agreement with ``reference`` there."""
    nll, kld, agree, count = 0.0, 0.0, 0, 0
    for got, ref, window in zip(logits, reference, batch, strict=True):
        half = len(window) // 2
        lp, lq = _log_softmax(got[half - 1 : -1]), _log_softmax(ref[half - 1 : -1])
        target = np.asarray(window[half:])
        nll -= float(lp[np.arange(len(target)), target].sum())
        kld += float((np.exp(lq) * (lq - lp)).sum())
        agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        count += len(target)
    if count == 0:
        raise ValueError("no window to score: the held-out text is shorter than one context")
    return Quality(
        perplexity=round(float(np.exp(nll / count)), 4),
        kl_divergence=round(kld / count, 5),
        agreement=round(agree / count, 4),
        scored_tokens=count,
    )


def window_logits(model: str, batch: Sequence[Sequence[int]], threads: int = 2) -> list[Logits]:
    """llama.cpp's logits at every position of every window, one fresh sequence each."""
    import llama_cpp

    context = max(len(w) for w in batch)
    llm: Any = llama_cpp.Llama(
        model, n_ctx=context, n_batch=context, logits_all=True, n_threads=threads, verbose=False
    )
    out = []
    try:
        for window in batch:
            llm.reset()  # eval() drops the KV cache past n_tokens: a fresh sequence
            llm.eval(list(window))
            out.append(np.array(llm.scores[: len(window)], dtype=np.float64))
    finally:
        llm.close()
    return out


def measure(
    candidate: str, reference: str, batch: Sequence[Sequence[int]], threads: int = 2
) -> Quality:
    """``candidate`` scored against ``reference`` on ``batch`` (both GGUFs)."""
    ref = window_logits(reference, batch, threads)
    got = ref if candidate == reference else window_logits(candidate, batch, threads)
    return score(got, ref, batch)


# llama.cpp's SPM tokenizer is quadratic-ish on huge inputs: tokenize in chunks this long.
TOKENIZE_CHARS = 20_000


def tokenize(model: str, text: str) -> list[int]:
    """``text``'s tokens by ``model``'s vocabulary (a GGUF), without BOS."""
    import llama_cpp

    llm: Any = llama_cpp.Llama(model, vocab_only=True, verbose=False)
    out: list[int] = []
    try:
        for start in range(0, len(text), TOKENIZE_CHARS):
            chunk = text[start : start + TOKENIZE_CHARS].encode()
            out += llm.tokenize(chunk, add_bos=False, special=False)
        bos = int(llm.token_bos())
    finally:
        llm.close()
    return [bos, *out]


def measure_text(
    candidate: str, reference: str, text: str, context: int, max_windows: int, threads: int = 2
) -> tuple[Quality, Quality]:
    """``candidate`` and ``reference`` on the first ``max_windows`` windows of ``context``
    tokens of ``text``: the candidate's figures, and the reference's own (its perplexity is
    what the candidate's is scored against)."""
    bos, *tokens = tokenize(reference, text)
    batch = windows(tokens, context, bos)[:max_windows]
    if not batch:
        raise ValueError(
            f"the held-out text is {len(tokens)} tokens, shorter than one window of {context}"
        )
    ref = window_logits(reference, batch, threads)
    got = ref if candidate == reference else window_logits(candidate, batch, threads)
    return score(got, ref, batch), score(ref, ref, batch)


def as_score(
    quality: Quality,
    reference: Quality,
    metric: models.EvaluationMetric,
    reference_name: str | None,
) -> models.MeasuredAccuracy:
    """The figures as the score in 0..1 the floor applies to: agreement as it is;
    perplexity as the reference's / the candidate's (at most 1: a candidate that beats the
    reference on this text is as good); kl-divergence as exp(-KL)."""
    if metric is models.EvaluationMetric.AGREEMENT:
        value = quality.agreement
    elif metric is models.EvaluationMetric.PERPLEXITY:
        value = min(1.0, reference.perplexity / quality.perplexity)
    elif metric is models.EvaluationMetric.KL_DIVERGENCE:
        value = float(np.exp(-quality.kl_divergence))
    else:
        raise ValueError(f"a generative model's metric is not {metric}")
    return models.MeasuredAccuracy(
        metric=metric,
        value=round(value, 4),
        samples=quality.scored_tokens,
        reference=reference_name,
        perplexity=quality.perplexity,
        kl_divergence=quality.kl_divergence,
        agreement=quality.agreement,
    )
