"""Typed, frozen views of ``params.yaml``: the one front door for params.

Every section loads into a dataclass; an unknown key or a wrong type is an error that names the
key (``params.yaml: distill.temprature: unknown key``), so a typo never silently uses a default.
``load_params`` checks the WHOLE file (every section, ranges, enum values, unknown sections) before
a stage does any work, so a bad value fails in the first second, not after an hour of training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union

import yaml


class UserError(ValueError):
    """A fault in what the user gave (params, data, artifacts): the message names the file or key and
    says what to do. Stages print it as one ``<stage>: error: ...`` line, never as a traceback."""


class ParamsError(UserError):
    """A params.yaml key is unknown, missing, of the wrong type or out of range."""


def user_error_message(stage: str, e: BaseException) -> str | None:
    """The one-line ``<stage>: error: ...`` for an expected fault, or None for a bug (keeps its traceback)."""
    if isinstance(e, UserError):
        return f"{stage}: error: {e}"
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        name = e.filename or ""
        return f"{stage}: error: {name}{': ' if name else ''}{e.strerror or e}"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{stage}: error: {e.filename or 'disk'}: no space left on the device; free some and rerun"
    if isinstance(e, KeyboardInterrupt):
        return f"{stage}: interrupted; nothing half-written was left (outputs are replaced only when complete)"
    return None


@contextlib.contextmanager
def stage_errors(stage: str) -> Iterator[None]:
    """Wrap a stage's body: expected faults exit non-zero with ``<stage>: error: <file or key>: <what>``.

    Expected faults are ``UserError`` (ParamsError, data.PrepareError, checkpoint.ArtifactError),
    missing files and permission errors, a full disk, and Ctrl-C (exit 130). Anything else is a bug
    and keeps its traceback. Outputs are written atomically, so after any of these the previous
    outputs (or none) are what is on disk, and DVC records nothing.
    """
    try:
        yield
    except (Exception, KeyboardInterrupt) as e:
        message = user_error_message(stage, e)
        if message is None:
            raise
        if isinstance(e, KeyboardInterrupt):
            print(message, file=sys.stderr)
            raise SystemExit(130) from None
        raise SystemExit(message) from None


def exit_on_user_errors(stage: str) -> None:
    """One-line alternative to ``with stage_errors(stage):`` for a stage script: a ``sys.excepthook``
    that prints expected faults as one ``<stage>: error: ...`` line (exit status 1) and leaves bugs'
    tracebacks alone."""
    previous = sys.excepthook

    def hook(tp, e, tb):
        message = user_error_message(stage, e)
        if message is None:
            previous(tp, e, tb)
        else:
            print(message, file=sys.stderr)

    sys.excepthook = hook


class FieldError(ValueError):
    """Raised by a dataclass's ``__post_init__``: ``field`` is out of range; ``from_dict`` adds the section."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _require(ok: bool, name: str, value: Any, what: str) -> None:
    if not ok:
        raise FieldError(name, f"{what}, got {value!r}")


@dataclass(frozen=True)
class DataParams:
    source: Literal["fashion-mnist", "folder"] = "fashion-mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    image_size: int = 28
    val_fraction: float = 0.1  # hold-out of train when the source has no validation split
    limit: Optional[int] = None  # cap images per split (quick runs)
    skip_bad: bool = False  # skip unreadable images (counted in metrics) instead of failing
    classes_file: Optional[str] = None  # sidecar with one class name per line (Food-11 layout)

    def __post_init__(self) -> None:
        _require(bool(self.root), "root", self.root, "must name the data folder")
        _require(8 <= self.image_size <= 1024, "image_size", self.image_size, "must be between 8 and 1024 pixels")
        _require(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "must be between 0 and 1 (exclusive)")
        _require(self.limit is None or self.limit >= 1, "limit", self.limit, "must be >= 1, or null for no cap")


def cores() -> int:
    """The cores this process may run on (its affinity: a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_nproc(device: str = "auto", batch_size: int = 2) -> int:
    """What ``nproc: auto`` means on this machine: 2 processes (one thread each on 2 cores) when training on
    the CPU of a Linux machine with 2+ cores, else 1.

    Measured on 2 cores (README, "Faster on one CPU"): StudentNet's training stage ran 1.86x faster as two
    1-thread DDP processes than as one 2-thread process (small convolutions scale badly over threads, and
    the batch bookkeeping runs in parallel too). One process where that was not measured or does not hold:
    CUDA (one process per GPU is the user's call: ``nproc: N``), macOS and Windows (gloo binds the Linux
    loopback name ``lo``), one core, an odd global batch.
    """
    if sys.platform != "linux" or batch_size % 2 or cores() < 2:
        return 1
    name = os.environ.get("SHRINK_DEVICE") or device
    if name.startswith("cuda"):
        return 1
    if name == "auto":
        import torch  # here, not at the top: reading params needs no torch

        if torch.cuda.is_available():
            return 1
    return 2


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 3
    batch_size: int = 128
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    crop_padding: int = 2  # random-crop padding in pixels (0 disables)
    flip: bool = True  # random horizontal flip
    label_smoothing: float = 0.0
    eval_batch_size: int = 512
    nproc: Union[int, Literal["auto"]] = 1  # processes (torchrun + DDP) on this machine; batch_size is the
    # global batch. auto: auto_nproc (2 on a Linux CPU with 2+ cores, else 1), resolved here
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present (SHRINK_DEVICE overrides)
    channels_last: bool = False  # NHWC memory format: measured 1.57x for StudentNet on 2 CPU cores

    def __post_init__(self) -> None:
        _require(self.epochs >= 0, "epochs", self.epochs, "must be >= 0 (0 keeps the model as initialised)")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _require(self.lr > 0, "lr", self.lr, "must be > 0")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        _require(0 <= self.crop_padding <= 64, "crop_padding", self.crop_padding, "must be between 0 and 64 pixels")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        _require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be >= 1")
        if self.nproc == "auto":
            object.__setattr__(self, "nproc", auto_nproc(self.device, self.batch_size))
        _require(1 <= self.nproc <= 1024, "nproc", self.nproc, "must be between 1 and 1024 processes, or auto")
        _require(self.batch_size % self.nproc == 0, "batch_size", self.batch_size,
                 f"must split evenly over nproc={self.nproc} processes (use a multiple of {self.nproc})")


@dataclass(frozen=True)
class StudentArchParams:
    arch: str = "studentnet"  # studentnet (the course's net) or a torchvision classification model with BatchNorm
    base: int = 16  # StudentNet only
    width_mult: float = 1.0  # StudentNet only
    small_input: bool = True  # torchvision archs: stem stride 1 (and no stem max-pool), see models.adapt_small_input

    def __post_init__(self) -> None:
        _require(self.base >= 1, "base", self.base, "must be >= 1")
        _require(0 < self.width_mult <= 16, "width_mult", self.width_mult, "must be in (0, 16]")


@dataclass(frozen=True)
class TeacherParams:
    arch: str = "resnet18"  # a torchvision classification model, or efficientnet_lite0 (extra 'pretrained')
    small_input: bool = False  # stem stride 1 (and no stem max-pool), see models.adapt_small_input
    weights: Optional[str] = None  # a state_dict file under weights/ (the folder the teacher stage depends on)
    input_size: Optional[int] = None  # the teacher upsamples its input to this many pixels (null: the data's size)
    input_norm: Literal["auto", "data", "imagenet", "inception"] = "auto"  # auto: the weights' own, else data
    backbone_lr_mult: float = 1.0  # the backbone learns at train.lr * this; the new head at train.lr
    train: TrainParams = field(default_factory=TrainParams)

    def __post_init__(self) -> None:
        if self.weights is not None:
            parts = Path(self.weights).parts
            _require(bool(parts) and not Path(self.weights).is_absolute() and ".." not in parts, "weights",
                     self.weights, "must be a file path inside the project, e.g. weights/resnet18-f37072fd.pth "
                     "(bring it in with dvc import-url; README, \"Pretrained teachers\"), or null for scratch")
        _require(self.input_size is None or 8 <= self.input_size <= 1024, "input_size", self.input_size,
                 "must be between 8 and 1024 pixels, or null for the data's own size")
        _require(0 < self.backbone_lr_mult <= 1, "backbone_lr_mult", self.backbone_lr_mult,
                 "must be in (0, 1] (1: one learning rate for the whole net)")


@dataclass(frozen=True)
class StudentParams:
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class DistillParams:
    temperature: float = 4.0
    alpha: float = 0.9
    train: TrainParams = field(default_factory=TrainParams)

    def __post_init__(self) -> None:
        _check_kd(self.temperature, self.alpha)


def _check_kd(temperature: float, alpha: float) -> None:
    _require(temperature > 0, "temperature", temperature, "must be > 0")
    _require(0 <= alpha <= 1, "alpha", alpha, "must be in [0, 1] (the weight of the teacher's soft targets)")


@dataclass(frozen=True)
class SlimParams:
    l1: float = 0.0  # L1 penalty on BatchNorm gammas of the prunable blocks (Network Slimming)

    def __post_init__(self) -> None:
        _require(self.l1 >= 0, "l1", self.l1, "must be >= 0")


def _check(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ParamsError(f"params.yaml: {key}: must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check(value, inner[0], key)
        for alt in inner:  # e.g. int | Literal["auto"]: the first that fits
            with contextlib.suppress(ParamsError):
                return _check(value, alt, key)
        names = [repr(typing.get_args(a)[0]) if typing.get_origin(a) is Literal else a.__name__ for a in inner]
        raise ParamsError(f"params.yaml: {key}: expected {' or '.join(names)}, got {value!r}")
    if origin is dict:
        _, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ParamsError(f"params.yaml: {key}: expected a mapping, got {value!r}")
        return {k: _check(v, inner, f"{key}.{k}") for k, v in value.items()}
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
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ParamsError(f"params.yaml: {key}.{missing[0]}: missing key (required)")
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise ParamsError(f"params.yaml: {key}.{e.field}: {e}") from None
    except ParamsError:
        raise
    except (ValueError, TypeError) as e:  # another module's dataclass checks its own fields
        raise ParamsError(f"params.yaml: {key}: {e}") from None


SECTIONS = ("seed", "data", "student_net", "teacher", "student", "distill", "slim", "prune", "quantize", "evaluate")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read ``path`` and validate the whole file; returns the raw mapping (take sections with ``section``).

    Raises:
        ParamsError: the file is missing or not YAML, or any section, key or value is wrong; the
            message names the key and says what is allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the project folder, or pass --params)")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    params = params or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    validate(params)
    return params


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Build every section into its typed dataclass (raising ParamsError on the first fault).

    Returns the typed sections by name; prune becomes ``{"prune": PruneParams, "finetune": ...,
    "rounds": {name: RoundParams}}``.
    """
    unknown = [k for k in params if k not in SECTIONS]
    if unknown:
        raise ParamsError(f"params.yaml: {unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    seed = seed_of(params)
    if isinstance(params.get("teacher"), dict) and "pretrained" in params["teacher"]:
        raise ParamsError("params.yaml: teacher.pretrained: replaced by teacher.weights, a file under weights/ that "
                          "the teacher stage depends on (README, \"Pretrained teachers\"); remove the key")
    typed: dict[str, Any] = {"seed": seed}
    for name, cls in (("data", DataParams), ("student_net", StudentArchParams), ("teacher", TeacherParams),
                      ("student", StudentParams), ("distill", DistillParams), ("slim", SlimParams),
                      ("quantize", QuantizeParams)):
        typed[name] = section(params, name, cls)
    if typed["teacher"].small_input and not _defined_in("models", "supports_small_input")(typed["teacher"].arch):
        raise ParamsError(f"params.yaml: teacher.small_input: not supported by {typed['teacher'].arch} "
                          f"(use teacher.input_size to feed it larger images)")
    check_arch = _defined_in("models", "check_arch")
    for key, role in (("student_net", "student"), ("teacher", "teacher")):
        try:
            check_arch(typed[key].arch, role)
        except ValueError as e:
            raise ParamsError(f"params.yaml: {key}.arch: {e}") from None
    typed["prune"] = prune_sections(params)
    rounds = typed["prune"]["rounds"]
    models = {"teacher", "student", "distill", *rounds}
    for name, r in rounds.items():
        if r.parent not in ({"student", "distill"} | set(rounds)) - {name}:
            raise ParamsError(f"params.yaml: prune.rounds.{name}.parent: {r.parent!r} is not a model to prune "
                              f"(use student, distill or another round's name)")
    for i, m in enumerate(typed["quantize"].models):
        if m not in models:
            raise ParamsError(f"params.yaml: quantize.models[{i}]: no model named {m!r} "
                              f"(known: {', '.join(sorted(models))})")
    typed["evaluate"] = evaluate_section(params)
    return typed


def _defined_in(module: str, name: str) -> Any:
    """A params class (or the model registry) another module defines, imported only to VALIDATE params.yaml.

    Deliberately not a dvc.yaml dependency of every stage (nor seen by the import-closure test, being
    dynamic): validation can only reject a params file, never change what a stage computes, so an edit
    to evaluate.py must not rerun teacher training. Imported at call time: those modules import this one.
    """
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def prune_sections(params: dict[str, Any]) -> dict[str, Any]:
    """The prune section: shared PruneParams fields, ``finetune`` and ``rounds`` (one RoundParams each)."""
    PruneParams, RoundParams = _defined_in("prune", "PruneParams"), _defined_in("prune", "RoundParams")

    pp = params.get("prune") or {}
    if not isinstance(pp, dict):
        raise ParamsError(f"params.yaml: prune: expected a mapping, got {pp!r}")
    own = {f.name for f in dataclasses.fields(PruneParams)}
    known = own | {"finetune", "rounds"}
    for k in pp:
        if k not in known:
            raise ParamsError(f"params.yaml: prune.{k}: unknown key (known: {', '.join(sorted(known))})")
    rounds = pp.get("rounds") or {}
    if not isinstance(rounds, dict):
        raise ParamsError(f"params.yaml: prune.rounds: expected a mapping of round name -> "
                          f"{{parent, width, epochs}}, got {rounds!r}")
    return {
        "prune": from_dict(PruneParams, {k: v for k, v in pp.items() if k in own}, "prune"),
        "finetune": from_dict(FinetuneParams, pp.get("finetune"), "prune.finetune"),
        "rounds": {str(n): from_dict(RoundParams, r, f"prune.rounds.{n}") for n, r in rounds.items()},
    }


def evaluate_section(params: dict[str, Any]) -> Any:
    EvaluateParams = _defined_in("evaluate", "EvaluateParams")
    p = section(params, "evaluate", EvaluateParams)
    for name, ok, what in (("threads", lambda v: v >= 1, "must be >= 1"),
                           ("repeats", lambda v: v >= 1, "must be >= 1 (timed runs per model)"),
                           ("warmup", lambda v: v >= 0, "must be >= 0"),
                           ("batch_sizes", lambda v: len(v) > 0 and min(v) >= 1, "must be a non-empty list of sizes >= 1")):
        if hasattr(p, name) and not ok(getattr(p, name)):
            raise ParamsError(f"params.yaml: evaluate.{name}: {what}, got {getattr(p, name)!r}")
    return p


def section(params: dict[str, Any], name: str, cls: type) -> Any:
    """The typed view of one top-level section, e.g. ``section(p, "distill", DistillParams)``."""
    return from_dict(cls, params.get(name), name)


def seed_of(params: dict[str, Any]) -> int:
    seed = _check(params.get("seed", 0), int, "seed")
    if not 0 <= seed < 2**63:
        raise ParamsError(f"params.yaml: seed: must be a non-negative integer, got {seed!r}")
    return seed


@dataclass(frozen=True)
class FinetuneParams:
    """Fine-tuning after each pruning round (epochs come from the round)."""

    distill: bool = True  # fine-tune with the KD loss from the teacher instead of plain CE
    temperature: float = 4.0
    alpha: float = 0.9
    train: TrainParams = field(default_factory=TrainParams)

    def __post_init__(self) -> None:
        _check_kd(self.temperature, self.alpha)


@dataclass(frozen=True)
class QuantizeParams:
    models: list[str] = field(default_factory=lambda: ["distill"])  # checkpoints to quantize (one stage each)
    calibration_images: int = 512  # training images that calibrate int8 activation ranges

    def __post_init__(self) -> None:
        _require(self.calibration_images >= 1, "calibration_images", self.calibration_images, "must be >= 1")
