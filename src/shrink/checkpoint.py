"""Checkpoints: weights plus everything needed to rebuild and use the model.

A checkpoint is a plain dict (loads with ``torch.load(..., weights_only=True)``)::

    {"model": "studentnet", "model_kwargs": {"widths": [...]}, "num_classes": 10,
     "state_dict": {...}, "params": {...resolved params that made it...},
     "data": {"classes": [...], "mean": [...], "std": [...], "image_size": 28}}
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import UserError
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


CHECKPOINT_KEYS = ("model", "model_kwargs", "num_classes", "state_dict", "data")


class ArtifactError(UserError):
    """A model file is missing, corrupt, not ours, or unsafe to load; the message names it."""


def safe_torch_load(path: str | os.PathLike, remedy: str | None = None) -> Any:
    """``torch.load(..., weights_only=True)`` with errors that name the file and say what to do.

    A file a weights-only load refuses holds pickled Python objects: it did not come from this
    pipeline, and loading it with ``weights_only=False`` could run any code it carries.
    ``remedy`` replaces the advice (rerun the pipeline) for files the pipeline does not make.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found; {remedy or 'run the stage that makes it (dvc repro)'}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise ArtifactError(
                f"{path}: not a trusted shrink artifact: it holds Python objects that a safe (weights-only) load "
                f"refuses. Do not load it with weights_only=False (that would run code from the file); "
                f"{remedy or 'recreate it with the pipeline (dvc repro)'}") from None
        raise ArtifactError(f"{path}: corrupt model file ({e}); {remedy or 'recreate it (dvc repro -f)'}") from None
    except Exception as e:  # truncated zip, not a torch file at all, ...
        raise ArtifactError(f"{path}: corrupt or not a PyTorch file ({type(e).__name__}); "
                            f"{remedy or 'recreate it with the pipeline (dvc repro -f)'}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a shrink checkpoint safely; ArtifactError if it is missing, corrupt, unsafe or not a checkpoint."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        have = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ArtifactError(f"{path}: not a shrink checkpoint (expected keys {', '.join(CHECKPOINT_KEYS)}; "
                            f"found {have}); use a models/<name>.pt file the pipeline wrote")
    return ckpt


def check_classes(ckpt: dict[str, Any], classes: list[str], path: str | os.PathLike) -> None:
    """ArtifactError unless the checkpoint was trained on the same classes as the prepared data."""
    if list(ckpt["data"].get("classes", [])) != list(classes):
        raise ArtifactError(f"{path}: trained on other classes ({len(ckpt['data'].get('classes', []))}) than the "
                            f"prepared data ({len(classes)}); rerun the pipeline from the data (dvc repro)")


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike) -> nn.Module:
    """Rebuild the model a checkpoint (dict or path) describes and load its weights strictly."""
    where = ckpt if isinstance(ckpt, (str, os.PathLike)) else "checkpoint"  # before ckpt becomes the dict
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    try:
        model = build_model(ckpt["model"], ckpt["num_classes"], **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise ArtifactError(f"{where}: weights do not fit the model it names ({' '.join(str(e).split())[:300]}); "
                            f"recreate it with the pipeline (dvc repro -f)") from None
    return model.eval()


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (what lands on disk): how the course measured model size."""
    buf = io.BytesIO()  # in memory: nothing to clean up if it fails
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
