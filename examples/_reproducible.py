"""Bit-reproducible example artifacts: the generators run themselves under one arithmetic.

A trained model's bytes, and so the `sha256` its manifest carries (the pod's fetch refuses
any other bytes), depend on the arithmetic that trained it: OpenBLAS picks a kernel for the
CPU it runs on and splits its sums over threads, and numpy dispatches AVX-512 code where
the CPU has it. Measured: the digits MLP trained on an AMD EPYC here gave three different
`model.onnx` files under OpenBLAS' default (Zen, two threads), Haswell and Sandybridge
kernels. Under one kernel (Haswell's AVX2, on every x86-64 server since 2013), one thread
and numpy without AVX-512, the bytes are the same on any such machine; on another
architecture (arm64) they differ and the generator's `--yaml` writes their own digests.
"""

from __future__ import annotations

import os
import sys

PINNED = {
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL "
    "AVX512_ICL AVX512_SPR",
}


def pin_arithmetic() -> None:
    """Re-run this script under `PINNED` unless it already runs under it (the libraries
    read these variables once, when they load, so the process must start with them)."""
    if all(os.environ.get(k) == v for k, v in PINNED.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PINNED})
