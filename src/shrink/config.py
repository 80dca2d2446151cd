"""Typed, frozen views of ``params.yaml``.

Every section loads into a dataclass; an unknown key or a wrong type is an error that names the
key (``params.yaml: distill.temprature: unknown key``), so a typo never silently uses a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


class ParamsError(ValueError):
    """A params.yaml key is unknown, missing or of the wrong type."""


@dataclass(frozen=True)
class DataParams:
    source: str = "fashion-mnist"  # "fashion-mnist" or "folder"
    root: str = "/usr/share/datasets/fashion-mnist"
    image_size: int = 28
    val_fraction: float = 0.1  # hold-out of train when the source has no validation split
    limit: Optional[int] = None  # cap images per split (quick runs)
    skip_bad: bool = False  # skip unreadable images (counted in metrics) instead of failing
    classes_file: Optional[str] = None  # sidecar with one class name per line (Food-11 layout)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 3e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"  # "onecycle", "cosine" or "constant"
    crop_padding: int = 2  # random-crop padding in pixels (0 disables)
    flip: bool = True  # random horizontal flip
    label_smoothing: float = 0.0
    eval_batch_size: int = 512


@dataclass(frozen=True)
class StudentArchParams:
    base: int = 16
    width_mult: float = 1.0


@dataclass(frozen=True)
class TeacherParams:
    arch: str = "resnet18"
    pretrained: str = "none"  # "none" or "imagenet" (from the local torch cache only)
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class StudentParams:
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class DistillParams:
    temperature: float = 4.0
    alpha: float = 0.9
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class SlimParams:
    l1: float = 0.0  # L1 penalty on BatchNorm gammas of the prunable blocks (Network Slimming)


def _check(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(value, inner, key)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: {key}: expected a list, got {value!r}")
        return [_check(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ParamsError(f"params.yaml: {key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, key: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"params.yaml: {key}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ParamsError(f"params.yaml: {key}.{k}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {k: _check(v, hints[k], f"{key}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return params


def section(params: dict[str, Any], name: str, cls: type) -> Any:
    """The typed view of one top-level section, e.g. ``section(p, "distill", DistillParams)``."""
    return from_dict(cls, params.get(name), name)


def seed_of(params: dict[str, Any]) -> int:
    return _check(params.get("seed", 0), int, "seed")


@dataclass(frozen=True)
class FinetuneParams:
    """Fine-tuning after each pruning round (epochs come from the round)."""

    distill: bool = True  # fine-tune with the KD loss from the teacher instead of plain CE
    temperature: float = 4.0
    alpha: float = 0.9
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class QuantizeParams:
    models: list[str] = field(default_factory=lambda: ["distill"])  # checkpoints to quantize (one stage each)
    calibration_images: int = 512  # training images that calibrate int8 activation ranges
