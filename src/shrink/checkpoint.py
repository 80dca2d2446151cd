"""Checkpoints: weights plus everything needed to rebuild and use the model.

A checkpoint is a plain dict (loads with ``torch.load(..., weights_only=True)``)::

    {"model": "student", "model_kwargs": {"widths": [...]}, "num_classes": 10,
     "state_dict": {...}, "params": {...resolved params that made it...},
     "data": {"classes": [...], "mean": [...], "std": [...], "image_size": 28}}
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import save_torch
from .models import build_model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    name: str,
    model_kwargs: dict[str, Any],
    num_classes: int,
    data_meta: dict[str, Any],
    params: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (temp file, then rename).

    Args:
        path: destination ``.pt`` file.
        model: the network whose ``state_dict`` is saved (moved to CPU, fp32 as trained).
        name: registry name used to rebuild it.
        model_kwargs: constructor arguments (e.g. StudentNet ``widths``).
        num_classes: output classes.
        data_meta: class names and normalisation from the prepared data.
        params: the resolved params that made this model.
        extra: anything else worth keeping (e.g. pruning history).
    """
    ckpt = {
        "model": name,
        "model_kwargs": model_kwargs,
        "num_classes": num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "params": params,
        "data": data_meta,
        **(extra or {}),
    }
    save_torch(ckpt, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike) -> nn.Module:
    """Rebuild the model a checkpoint (dict or path) describes and load its weights strictly."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    kwargs = dict(ckpt["model_kwargs"])
    kwargs.pop("pretrained", None)  # weights come from the checkpoint, never from a hub
    model = build_model(ckpt["model"], ckpt["num_classes"], **kwargs)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval()


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (what lands on disk): how the course measured model size."""
    buf = io.BytesIO()  # in memory: nothing to clean up if it fails
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
