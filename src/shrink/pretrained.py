"""Pretrained weights as a tracked input: check a weights file, then load it into a teacher's backbone.

The file lives under ``weights/`` (brought in with ``dvc import-url``, a dependency of the teacher stage).
Before any training, ``load_backbone``:

1. hashes the file (sha256, recorded in the checkpoint and ``metrics/teacher.json``); when its name carries
   torchvision's hash prefix (``resnet18-f37072fd.pth``: ``-<8 or more hex digits>`` before the suffix), the
   sha256 must start with it, so a truncated or swapped download is caught by name;
2. loads it with ``torch.load(weights_only=True)`` (a file holding pickled Python objects is refused);
3. checks that its keys and shapes fit the arch, the classifier head aside, and names the first mismatches;
4. loads everything but the head: the head stays freshly initialised, sized for the dataset's classes.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import ArtifactError, safe_torch_load
from .io import sha256_file
from .models import output_layer_name, unwrap

HASH_PREFIX = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")  # torchvision's <name>-<sha256 prefix>.pth


class WeightsError(ArtifactError):
    """A weights file is missing, outside weights/, corrupt, or does not fit the arch; the message names it."""


def resolve(weights: str, weights_dir: str | Path) -> Path:
    """The file ``teacher.weights`` names, which must lie inside ``weights_dir`` (the folder dvc.yaml declares
    as the teacher's dependency: a file elsewhere would be an input DVC does not see)."""
    path, folder = Path(weights), Path(weights_dir)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise WeightsError(f"params.yaml: teacher.weights: {weights} is not inside {folder}/, the folder the teacher "
                           f"stage depends on (dvc.yaml); put the file there, e.g. dvc import-url <url> {folder}/")
    if not path.is_file():
        raise WeightsError(f"{weights}: weights file not found (teacher.weights); bring it in with "
                           f"dvc import-url <url> {weights} (or dvc pull if the project has it), or set "
                           f"teacher.weights: null to train from scratch")
    return path


def check_hash(path: Path, digest: str) -> None:
    """WeightsError unless ``digest`` (sha256 hex) starts with the hash prefix in ``path``'s name, if any."""
    m = HASH_PREFIX.search(path.name)
    if m and not digest.startswith(m.group(1)):
        raise WeightsError(f"{path}: sha256 {digest[:16]}... does not start with {m.group(1)}, the hash in its "
                           f"name: the file is truncated or not the one published under that name; fetch it again "
                           f"(dvc update {path}.dvc)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` state_dict, loaded with ``weights_only=True``."""
    try:
        state = safe_torch_load(path, remedy=f"fetch the file again (dvc update {path}.dvc)")
    except ArtifactError as e:
        raise WeightsError(str(e)) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint: its weights
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state_dict (expected a mapping of parameter names to tensors, as "
                           f"torch.save(model.state_dict()) writes)")
    return state


def mismatches(model: nn.Module, state: dict[str, torch.Tensor], head: str) -> list[str]:
    """How ``state`` fails to fit ``model`` outside the ``head`` layer: missing keys, unexpected keys, shapes."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(head + ".")}
    theirs = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    # BatchNorm's counter is absent from files older than torch 0.4 (torchvision's resnet18-f37072fd.pth)
    out = [f"missing {k}" for k in own if k not in theirs and not k.endswith("num_batches_tracked")]
    out += [f"unexpected {k}" for k in theirs if k not in own]
    out += [f"{k}: {tuple(theirs[k].shape)} in the file, {tuple(v.shape)} in the model"
            for k, v in own.items() if k in theirs and theirs[k].shape != v.shape]
    return out


def load_backbone(model: nn.Module, path: str | Path, arch: str) -> dict[str, Any]:
    """Check ``path`` and load it into ``model`` (an ``InputAdapter`` or a bare net), all but the output layer.

    Returns:
        ``{"file": name, "sha256": hex}``, for the checkpoint and the metrics.

    Raises:
        WeightsError: the hash prefix in the name does not match, the file is not a weights-only state_dict,
            or its keys/shapes do not fit ``arch`` (the message names the first mismatches).
    """
    path = Path(path)
    digest = sha256_file(path)
    check_hash(path, digest)
    state = read_state_dict(path)
    net = unwrap(model)
    head = output_layer_name(net)
    wrong = mismatches(net, state, head)
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise WeightsError(f"{path}: does not fit teacher.arch {arch}: {'; '.join(wrong[:3])}{more}; use weights "
                           f"made for {arch}, or the arch they were made for")
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}  # a new head for our classes
    net.load_state_dict(state, strict=False)
    return {"file": path.name, "sha256": digest}
