"""The numeric settings a measurement depends on, recorded with it, and an exact mode for equivalence checks.

On recent NVIDIA GPUs cuDNN convolutions use TF32 by default (about 1e-3
relative error): fast, but an equivalence check at 1e-5 fails under it, and
two studies made under different settings are not comparable. Every study
and JSON output records :func:`environment`; :func:`exact_precision` turns
TF32 off for the checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def environment() -> dict[str, Any]:
    """PyTorch version, CUDA/cuDNN versions and the TF32, determinism and matmul-precision settings."""
    cudnn = torch.backends.cudnn
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(cudnn.allow_tf32),
        "cudnn_benchmark": bool(cudnn.benchmark),
        "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


@contextlib.contextmanager
def exact_precision() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN inside the block (restored after): full float32 arithmetic."""
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv
