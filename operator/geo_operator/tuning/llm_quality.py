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
`measure` does both for a candidate and its reference. Used by
examples/pycode/make_artifacts.py to make the family's figures, and by the tests that
check them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

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
