"""Which device a run trains on, and in which autocast dtype.

Its own small module because both the training loop (``train``) and the process launcher (``distributed``,
which must know the device before it starts any process) ask it, and ``train`` imports ``distributed``.
"""
from __future__ import annotations

import os

import torch

from .config import ParamsError


def select_device(name: str | None = None) -> torch.device:
    """``SHRINK_DEVICE`` if set, else ``name`` unless it is ``auto``/None, else CUDA when present, else the CPU."""
    name = os.environ.get("SHRINK_DEVICE") or (name if name not in (None, "auto") else None)
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"train.device: {name!r} asked for, but torch sees no CUDA device (use auto or cpu)")
    return torch.device(name)


def autocast_dtype(capability: tuple[int, int] | None) -> torch.dtype | None:
    """Autocast dtype for training on a GPU of CUDA compute ``capability`` (None: the CPU).

    bf16 where the GPU has bf16 hardware (8.0 and up: A100, RTX 30xx and later); fp16, with a GradScaler,
    below (T4 and RTX 20xx 7.5, V100 7.0): ``torch.cuda.is_bf16_supported()`` answers yes there too, by
    default, because PyTorch can *emulate* bf16, several times slower than fp16. None on the CPU: bf16 was
    measured 0.90x for StudentNet at 28 px on an AVX-512 CPU, and 0.03x for ResNet18 on an AVX2 one, which
    has no bf16 instructions (docs/faster-on-cpu.md).
    """
    if capability is None:
        return None
    return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training on ``device`` (``autocast_dtype`` of its compute capability)."""
    if device.type != "cuda":
        return None
    return autocast_dtype(torch.cuda.get_device_capability(device))
