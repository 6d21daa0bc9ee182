"""Build the "pycode" example: a small code model trained here, and its GGUF family.

Run by hand, by ``make artifacts`` or by the tests' fixture as::

    python examples/pycode/make_artifacts.py [--out DIR] [--steps N] [--no-cache]

Everything comes from this machine: the text is the Python standard library's own
source (the ``*.py`` files at the top of ``sysconfig``'s stdlib folder, sorted;
every 12th file held out), so the model is a small code model. Seeded throughout.

The tokenizer
    a sentencepiece-style vocabulary of 512 pieces written as llama.cpp's ``llama``
    (SPM) tokenizer: ``<unk> <s> </s>``, the 256 byte-fallback tokens, the
    characters the text uses (space as ``▁``), and byte-pair merges learned on the
    training text (score = minus the merge's rank). The text is then tokenized **by
    llama.cpp itself** (the vocabulary-only GGUF loaded through llama-cpp-python), so
    training, serving and evaluation see the very same tokens.
The model (``teacher``)
    llama architecture (RMSNorm, RoPE in llama.cpp's adjacent-pair layout, so Q and K
    need no permutation, SwiGLU, untied output): 2 layers, width 256, 4 heads of 64,
    feed-forward 512, context 256. Width and feed-forward are multiples of 256 so
    every K-quant applies to every matrix. Trained with JAX on CPU (AdamW, cosine
    schedule) on windows of 256 tokens starting with ``<s>``.
The family (``<out>/<name>/model.gguf``)
    ``f16`` the teacher written with the ``gguf`` package (the reference); then
    **llama.cpp's own quantizer** (``llama_model_quantize``) from it: ``q8_0``,
    ``q5_k_m``, ``q4_k_m``, ``q3_k_m``, ``q2_k``; ``student``, 1 layer, distilled
    from the teacher's logits (KL at T = 1 plus cross-entropy), in f16; and
    ``q2_k-miscalibrated``, THE TESTS' BAD ARTIFACT: the teacher with its output
    matrix scaled by 0.35 before a *pure* Q2_K quantization (every tensor in 2
    bits, output and embeddings included): a deployment that got the logit scale
    wrong, so its distribution is far too flat. The manifest declares the
    reference's quality for it, so that measuring has something to catch.

Measured with llama.cpp on this CPU (2 threads), written to ``measurements.json``:
on the held-out text in windows of 256 tokens (``<s>`` + 255; the second half of
each window scored, as ``llama-perplexity`` does) the perplexity, and against
``f16`` the mean KL divergence and the top-1 agreement; file size and SHA-256;
prefill and decode tokens/s of one sequence (median of 3).

The results are cached under ``$GEO_CACHE_DIR/artifacts/pycode-<sha>`` (default
``~/.cache/geo-e2e``), keyed by RECIPE, the steps and the corpus, so a fresh
clone on the same machine copies them instead of training again.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import hashlib
import itertools
import json
import os
import pathlib
import re
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "operator"))
from geo_operator.tuning import llm_quality

HERE = pathlib.Path(__file__).resolve().parent
SEED = 20261205
VOCAB_SIZE = 512
CONTEXT = 256
SPACE = "\u2581"  # sentencepiece's visible space
HELD_OUT_EVERY = 12
TRAIN_CHARS = 2_000_000
BPE_CHARS = 500_000
HELD_OUT_TOKENS = 8 * CONTEXT  # 8 windows

# llama.cpp token types (llama_token_type / gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
# llama_ftype values (llama.h)
FTYPES = {"q8_0": 7, "q5_k_m": 17, "q4_k_m": 15, "q3_k_m": 12, "q2_k": 10}
MISCALIBRATED = "q2_k-miscalibrated"
MISCALIBRATED_OUTPUT_SCALE = 0.35


@dataclass(frozen=True)
class Shape:
    layers: int
    width: int = 256
    heads: int = 4
    ffn: int = 512
    context: int = CONTEXT
    vocab: int = VOCAB_SIZE
    rms_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


TEACHER = Shape(layers=2)
STUDENT = Shape(layers=1)


def log(message: str) -> None:
    print(f"[pycode] {time.strftime('%H:%M:%S')} {message}", flush=True)


# --------------------------------------------------------------------------- corpus


def corpus_files() -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.is_file())
    held_out = files[::HELD_OUT_EVERY]
    return [p for p in files if p not in held_out], held_out


def read_text(paths: Sequence[pathlib.Path], limit: int) -> str:
    parts: list[str] = []
    size = 0
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


# --------------------------------------------------------------------------- tokenizer


def learn_vocabulary(text: str, size: int = VOCAB_SIZE) -> list[tuple[str, float, int]]:
    """(piece, score, type) for every id: specials, bytes, characters, merges."""
    escaped = text.replace(" ", SPACE)
    vocab: list[tuple[str, float, int]] = [
        ("<unk>", 0.0, UNKNOWN),
        ("<s>", 0.0, CONTROL),
        ("</s>", 0.0, CONTROL),
    ]
    vocab += [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    counts = collections.Counter(escaped)
    chars = sorted(c for c, n in counts.items() if (n >= 20 and c.isprintable()) or c == "\n")
    vocab += [(c, -1e6, NORMAL) for c in chars]
    # words: a run of indentation, or an optional space and what follows up to the next
    words = collections.Counter(
        tuple(w)
        for line in escaped[:BPE_CHARS].split("\n")
        for w in re.findall(f"{SPACE}?[^{SPACE}]+|{SPACE}+(?={SPACE}[^{SPACE}])|{SPACE}+", line)
    )
    known = {piece for piece, _, _ in vocab}
    seqs = {w: list(w) for w in words}
    rank = 0
    while len(vocab) < size:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in itertools.pairwise(s):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merged = a + b
        for w in words:
            s = seqs[w]
            if len(s) < 2:
                continue
            out: list[str] = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
        if merged not in known:
            known.add(merged)
            vocab.append((merged, -float(rank), NORMAL))
            rank += 1
    return vocab


def write_gguf(
    path: pathlib.Path,
    shape: Shape,
    vocab: Sequence[tuple[str, float, int]],
    weights: dict[str, np.ndarray] | None,
    name: str,
) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.width)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.heads)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_base)
    writer.add_vocab_size(len(vocab))
    writer.add_file_type(1)  # LLAMA_FTYPE_MOSTLY_F16
    writer.add_tokenizer_model("llama")
    writer.add_token_list([piece for piece, _, _ in vocab])
    writer.add_token_scores([score for _, score, _ in vocab])
    writer.add_token_types([kind for _, _, kind in vocab])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    for tensor, value in (weights or {}).items():
        data = value.astype(np.float32 if value.ndim == 1 else np.float16)
        writer.add_tensor(tensor, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tokenize(vocab_gguf: pathlib.Path, text: str) -> list[int]:
    import llama_cpp

    llm = llama_cpp.Llama(str(vocab_gguf), vocab_only=True, verbose=False)
    out: list[int] = []
    # per file-sized chunk: llama.cpp's SPM tokenizer is quadratic-ish on huge inputs
    for start in range(0, len(text), 20_000):
        out += llm.tokenize(text[start : start + 20_000].encode(), add_bos=False, special=False)
    return out


# --------------------------------------------------------------------------- model (JAX)


def init_params(shape: Shape, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def dense(out: int, inp: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((out, inp)) * scale / np.sqrt(inp)).astype(np.float32)

    params: dict[str, Any] = {
        "token_embd.weight": (rng.standard_normal((shape.vocab, shape.width)) * 0.5).astype(
            np.float32
        ),
        "output_norm.weight": np.ones(shape.width, np.float32),
        "output.weight": dense(shape.vocab, shape.width),
    }
    depth = 1.0 / np.sqrt(2 * shape.layers)
    for i in range(shape.layers):
        params |= {
            f"blk.{i}.attn_norm.weight": np.ones(shape.width, np.float32),
            f"blk.{i}.attn_q.weight": dense(shape.width, shape.width),
            f"blk.{i}.attn_k.weight": dense(shape.width, shape.width),
            f"blk.{i}.attn_v.weight": dense(shape.width, shape.width),
            f"blk.{i}.attn_output.weight": dense(shape.width, shape.width, depth),
            f"blk.{i}.ffn_norm.weight": np.ones(shape.width, np.float32),
            f"blk.{i}.ffn_gate.weight": dense(shape.ffn, shape.width),
            f"blk.{i}.ffn_up.weight": dense(shape.ffn, shape.width),
            f"blk.{i}.ffn_down.weight": dense(shape.width, shape.ffn, depth),
        }
    return params


def forward(params: dict[str, Any], tokens: Any, shape: Shape) -> Any:
    """Logits [B, T, vocab] for tokens [B, T]: llama.cpp's llama graph, in JAX."""
    import jax
    import jax.numpy as jnp

    def rms(x: Any, w: Any) -> Any:
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + shape.rms_eps) * w

    batch, length = tokens.shape
    d = shape.head_dim
    inv = shape.rope_base ** (-np.arange(0, d, 2, dtype=np.float32) / d)
    angle = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    cos = jnp.asarray(np.cos(angle))[None, :, None, :]
    sin = jnp.asarray(np.sin(angle))[None, :, None, :]

    def rope(x: Any) -> Any:  # adjacent pairs (x[2i], x[2i+1]): llama.cpp's ROPE_TYPE_NORM
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1).reshape(x.shape)

    mask = jnp.tril(jnp.ones((length, length), bool))
    x = params["token_embd.weight"][tokens]
    for i in range(shape.layers):
        p = lambda n, i=i: params[f"blk.{i}.{n}.weight"]  # noqa: E731
        h = rms(x, p("attn_norm"))
        q = rope((h @ p("attn_q").T).reshape(batch, length, shape.heads, d))
        k = rope((h @ p("attn_k").T).reshape(batch, length, shape.heads, d))
        v = (h @ p("attn_v").T).reshape(batch, length, shape.heads, d)
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
        att = jax.nn.softmax(jnp.where(mask, att, -1e30), axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(batch, length, shape.width)
        x = x + o @ p("attn_output").T
        h = rms(x, p("ffn_norm"))
        x = x + (jax.nn.silu(h @ p("ffn_gate").T) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    return rms(x, params["output_norm.weight"]) @ params["output.weight"].T


def batches(tokens: np.ndarray, batch: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - CONTEXT, batch)
        body = np.stack([tokens[s : s + CONTEXT - 1] for s in starts])
        yield np.concatenate([np.ones((batch, 1), np.int32), body], axis=1).astype(np.int32)


def train(
    shape: Shape,
    tokens: np.ndarray,
    steps: int,
    *,
    seed: int,
    teacher: tuple[dict[str, Any], Shape] | None = None,
    batch: int = 16,
    lr: float = 3e-3,
) -> dict[str, np.ndarray]:
    import jax
    import jax.numpy as jnp

    params = jax.tree_util.tree_map(jnp.asarray, init_params(shape, seed))
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    teacher_params = (
        jax.tree_util.tree_map(jnp.asarray, teacher[0]) if teacher is not None else None
    )

    def loss_fn(p: Any, x: Any) -> Any:
        logits = forward(p, x[:, :-1], shape)
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.mean(jnp.take_along_axis(logp, x[:, 1:, None], axis=-1))
        if teacher_params is None:
            return ce
        assert teacher is not None
        target = jax.nn.softmax(forward(teacher_params, x[:, :-1], teacher[1]), axis=-1)
        kl = jnp.mean(jnp.sum(target * (jnp.log(target + 1e-9) - logp), axis=-1))
        return 0.5 * ce + kl

    @jax.jit
    def step(p: Any, m: Any, v: Any, x: Any, t: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(p, x)
        warm = jnp.minimum(1.0, (t + 1) / 20)
        rate = lr * warm * 0.5 * (1 + jnp.cos(jnp.pi * t / steps))
        b1, b2, eps, decay = 0.9, 0.98, 1e-8, 0.01
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        p = jax.tree_util.tree_map(
            lambda p, m, v: p - rate * ((m / c1) / (jnp.sqrt(v / c2) + eps) + decay * p),
            p,
            m,
            v,
        )
        return p, m, v, loss

    started = time.monotonic()
    for t, x in zip(range(steps), batches(tokens, batch, seed), strict=False):
        params, m, v, loss = step(params, m, v, jnp.asarray(x), jnp.asarray(t, jnp.float32))
        if t % 25 == 0 or t == steps - 1:
            log(
                f"  step {t + 1}/{steps} loss {float(loss):.3f} "
                f"({time.monotonic() - started:.0f} s)"
            )
    return {k: np.asarray(val) for k, val in params.items()}


# --------------------------------------------------------------------------- llama.cpp


def quantize(source: pathlib.Path, target: pathlib.Path, ftype: int, *, pure: bool = False) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    params.pure = pure
    rc = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({source.name} -> ftype {ftype}) returned {rc}")


def speed(model: pathlib.Path, prompt: Sequence[int], decode: int = 64) -> dict[str, float]:
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=CONTEXT, n_batch=CONTEXT, n_threads=2, verbose=False)
    prefill, gen = [], []
    for _ in range(3):
        llm.reset()
        started = time.perf_counter()
        llm.eval(list(prompt))
        prefill.append(len(prompt) / (time.perf_counter() - started))
        token = int(np.argmax(llm.scores[len(prompt) - 1]))
        started = time.perf_counter()
        for _ in range(decode):
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        gen.append(decode / (time.perf_counter() - started))
    llm.close()
    return {
        "prefillTokensPerSecond": round(statistics.median(prefill), 1),
        "decodeTokensPerSecond": round(statistics.median(gen), 1),
    }


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- main


# Bump when what is trained, quantized or measured changes (the cache is keyed on it, the
# corpus and the steps, not on this file: editing the manifest writer retrains nothing).
RECIPE = "pycode-1"


def cache_key(train_files: Sequence[pathlib.Path], steps: int) -> str:
    digest = hashlib.sha256(RECIPE.encode())
    digest.update(str(steps).encode())
    for path in train_files:
        digest.update(path.name.encode())
        digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:12]


def build(out: pathlib.Path, steps: int) -> dict[str, Any]:
    started = time.monotonic()
    train_files, held_files = corpus_files()
    train_text = read_text(train_files, TRAIN_CHARS)
    held_text = read_text(held_files, 10 * HELD_OUT_TOKENS)
    log(f"corpus: {len(train_text):,} chars from {len(train_files)} stdlib files")
    vocab = learn_vocabulary(train_text)
    out.mkdir(parents=True, exist_ok=True)
    vocab_gguf = out / "vocab.gguf"
    write_gguf(vocab_gguf, TEACHER, vocab, None, "pycode-vocab")
    tokens = np.asarray(tokenize(vocab_gguf, train_text), np.int32)
    held = tokenize(vocab_gguf, held_text)[: HELD_OUT_TOKENS - HELD_OUT_TOKENS // CONTEXT]
    log(f"vocabulary {len(vocab)}; {len(tokens):,} training tokens, {len(held):,} held out")
    (out / "heldout.txt").write_text(held_text)

    log(f"training the teacher {asdict(TEACHER)} for {steps} steps")
    teacher = train(TEACHER, tokens, steps, seed=SEED)
    log(f"distilling the student {asdict(STUDENT)} for {steps} steps")
    student = train(STUDENT, tokens, steps, seed=SEED + 1, teacher=(teacher, TEACHER))

    paths: dict[str, pathlib.Path] = {}
    for name in ("f16", *FTYPES, "student", MISCALIBRATED):
        (out / name).mkdir(exist_ok=True)
        paths[name] = out / name / "model.gguf"
    write_gguf(paths["f16"], TEACHER, vocab, teacher, "pycode")
    write_gguf(paths["student"], STUDENT, vocab, student, "pycode-student")
    for name, ftype in FTYPES.items():
        quantize(paths["f16"], paths[name], ftype)
    with tempfile.TemporaryDirectory() as tmp:
        skewed = dict(teacher)
        skewed["output.weight"] = teacher["output.weight"] * MISCALIBRATED_OUTPUT_SCALE
        source = pathlib.Path(tmp) / "skewed.gguf"
        write_gguf(source, TEACHER, vocab, skewed, "pycode-miscalibrated")
        quantize(source, paths[MISCALIBRATED], FTYPES["q2_k"], pure=True)
    log("quantized with llama.cpp: " + ", ".join(FTYPES) + f", {MISCALIBRATED}")

    windows = llm_quality.windows(held, CONTEXT, bos=1)
    reference = llm_quality.window_logits(str(paths["f16"]), windows)
    prompt = windows[0][: CONTEXT // 2]
    artifacts: dict[str, Any] = {}
    for name, path in paths.items():
        logits = reference if name == "f16" else llm_quality.window_logits(str(path), windows)
        measured = llm_quality.score(logits, reference, windows)
        artifacts[name] = {
            "file": f"{name}/model.gguf",
            "bytes": path.stat().st_size,
            "sha256": sha256(path),
            "perplexity": measured.perplexity,
            "klDivergence": measured.kl_divergence,
            "agreement": measured.agreement,
            "scoredTokens": measured.scored_tokens,
            **speed(path, prompt),
        }
        log(f"  {name:20s} {json.dumps(artifacts[name])}")
    vocab_gguf.unlink()
    return {
        "model": "pycode",
        "measuredAt": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, llama.cpp via llama-cpp-python, 2 threads",
        "corpus": {
            "trainFiles": len(train_files),
            "trainTokens": len(tokens),
            "heldOutFiles": [p.name for p in held_files],
            "heldOutTokens": len(held),
            "python": sys.version.split()[0],
        },
        "teacher": asdict(TEACHER),
        "student": asdict(STUDENT),
        "steps": steps,
        "reference": "f16",
        "miscalibrated": MISCALIBRATED,
        "artifacts": artifacts,
        "buildSeconds": round(time.monotonic() - started, 1),
    }


PRECISIONS = {
    "f16": "fp16",
    "q8_0": "int8",
    "q5_k_m": "int5",
    "q4_k_m": "int4",
    "q3_k_m": "int3",
    "q2_k": "int2",
    "student": "fp16",
    MISCALIBRATED: "int2",
}
MANIFEST = HERE.parents[1] / "manifests" / "examples" / "pycode.yaml"
BASE_URI = "http://models.geo.local/pycode"


def manifest(measurements: dict[str, Any]) -> str:
    """manifests/examples/pycode.yaml: the family with its sizes, SHA-256s and figures."""
    arts = measurements["artifacts"]
    summary = ", ".join(
        f"{n} ppl {a['perplexity']:g} agree {a['agreement']:g}" for n, a in arts.items()
    )
    lines = [
        "# Generated by examples/pycode/make_artifacts.py — measured on "
        f"{measurements['measuredAt']} with llama.cpp on {measurements['machine']}: "
        f"{measurements['corpus']['heldOutTokens']} held-out tokens of the stdlib's source; "
        f"{summary}.",
        "# accuracy is the top-1 token agreement with f16; latencyMs one decode step of one",
        "# sequence (1000 / decode tokens/s). q2_k-miscalibrated, which declares f16's quality,",
        "# is left out here: it is the held-out gate's test artifact (see the README).",
        "apiVersion: geo.ai/v1alpha1",
        "kind: GeoDeployment",
        "metadata:",
        "  name: pycode",
        "spec:",
        "  model:",
        "    name: pycode",
        "    kind: generative",
        "    artifacts:",
    ]
    for name, a in arts.items():
        if name == MISCALIBRATED:
            continue
        lines += [
            f"      - name: {name.replace('_', '-')}",
            f"        precision: {PRECISIONS[name]}",
            "        format: gguf",
            f"        uri: {BASE_URI}/{a['file']}",
            f"        sha256: {a['sha256']}",
            f"        sizeBytes: {a['bytes']}",
            f"        accuracy: {a['agreement']}",
            f"        perplexity: {a['perplexity']}",
            f"        klDivergence: {a['klDivergence']}",
            f"        latencyMs: {round(1000 / a['decodeTokensPerSecond'], 4)}",
        ]
    lines += [
        "    selection:",
        "      policy: best-score",
        "      minAccuracyRatio: 0.9",
        "  triton:",
        "    engine:",
        "      slots: 4",
        f"      contextLength: {measurements['teacher']['context']}",
        "      maxTokensCap: 128",
        "    resources:",
        "      requests: {cpu: 500m, memory: 512Mi}",
        "      limits: {cpu: '2', memory: 1Gi}",
        "  objectives:",
        "    timeToFirstTokenP99Ms: 200",
        "    interTokenLatencyP99Ms: 50",
        "  autoscaling:",
        "    enabled: false",
        "  replicas: 1",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "artifacts")
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument("--no-cache", action="store_true", help="train even if cached")
    parser.add_argument(
        "--manifest",
        action="store_true",
        help=f"also write {MANIFEST.relative_to(HERE.parents[1])} from the measurements",
    )
    args = parser.parse_args(argv)
    cache_root = pathlib.Path(os.environ.get("GEO_CACHE_DIR", "~/.cache/geo-e2e")).expanduser()
    cached = cache_root / "artifacts" / f"pycode-{cache_key(corpus_files()[0], args.steps)}"
    if (cached / "measurements.json").exists() and not args.no_cache:
        log(f"copying the cached family from {cached}")
        shutil.copytree(cached, args.out, dirs_exist_ok=True)
        if args.manifest:
            MANIFEST.write_text(manifest(json.loads((cached / "measurements.json").read_text())))
        return 0
    measurements = build(args.out, args.steps)
    (args.out / "measurements.json").write_text(json.dumps(measurements, indent=2) + "\n")
    shutil.copytree(args.out, cached, dirs_exist_ok=True)
    if args.manifest:
        MANIFEST.write_text(manifest(measurements))
    log(
        f"wrote {args.out}/<name>/model.gguf and measurements.json "
        f"({measurements['buildSeconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
