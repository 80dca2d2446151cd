"""Which device a run trains on, in which autocast dtype, and where its data live on a GPU.

Its own small module because both the training loop (``train``) and the process launcher (``distributed``,
which must know the device before it starts any process) ask it, and ``train`` imports ``distributed``. Each
decision is a plain function, tested on the CPU (tests/test_device.py).
"""
from __future__ import annotations

import dataclasses
import os

import torch
from tqdm import tqdm

from .config import ParamsError
from .data import Split


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


SPLITS_SHARE = 1 / 3  # of the free GPU memory the splits may take; the rest: model, activations, optimiser, allocator


def placement(split_bytes: int, free_bytes: int, share: float = SPLITS_SHARE) -> str:
    """Where ``fit`` keeps the splits on a GPU: ``"device"`` (copied once; each step gathers its batch there)
    when they take at most ``share`` of the free memory, else ``"batches"`` (pinned host memory, each batch
    copied as it is needed). Food-11 at 224 px is ~1.7 GB of uint8: on a 4 GB GPU it would leave no room to train.

    Args:
        split_bytes: the splits' bytes (images and labels).
        free_bytes: the device's free memory (``torch.cuda.mem_get_info``).
        share: the most of ``free_bytes`` the splits may take.
    """
    return "device" if split_bytes <= free_bytes * share else "batches"


def place_splits(splits: tuple[Split, ...], device: torch.device, label: str | None) -> tuple[Split, ...]:
    """On CUDA, the splits moved where ``placement`` says, with one line ``<label>: data: ...`` saying which and
    why (none when ``label`` is None: ranks other than the writer); elsewhere the splits as they are."""
    if device.type != "cuda":
        return splits
    size = sum(s.images.nbytes + s.labels.nbytes for s in splits)
    free = torch.cuda.mem_get_info(device)[0]
    if placement(size, free) == "device":
        line = f"the splits ({size / 1e9:.2f} GB) are copied to {device} once ({free / 1e9:.2f} GB free there)"
        move = lambda t: t.to(device)  # noqa: E731
    else:
        line = (f"the splits ({size / 1e9:.2f} GB) stay in pinned host memory, each batch copied to {device}: "
                f"they would take over {SPLITS_SHARE:.0%} of its {free / 1e9:.2f} GB free")
        move = lambda t: t.pin_memory()  # noqa: E731
    if label is not None:
        tqdm.write(f"{label}: data: {line}")
    return tuple(dataclasses.replace(s, images=move(s.images), labels=move(s.labels)) for s in splits)
