"""Typed, frozen views of ``params.yaml``: the one front door for params.

Every section loads into a dataclass; an unknown key or a wrong type is an error that names the
key (``params.yaml: distill.temprature: unknown key``), so a typo never silently uses a default.
``load_params`` checks the WHOLE file (every section, ranges, enum values, unknown sections) before
a stage does any work, so a bad value fails in the first second, not after an hour of training.

The defaults are params.yaml's values, one truth (``Params()`` equals the loaded file but for its prune rounds:
tests/test_params.py). A section whose defaults differ from its class's (the teacher's ``train``, pruning's
``finetune``) gets them from its own default factory, and a key the file leaves out of a section takes that
section's default, not the class's.

Why one module of ~480 lines: it mirrors params.yaml section by section, so the whole file's schema (and every
check across sections in ``Params``) reads in one place.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .schema import FieldError, ParamsError, UserError, from_dict  # noqa: F401 (every module imports them here)
from .student_shape import CUTTABLE, PRUNABLE_BLOCKS, blocks_ok  # noqa: F401 (CUTTABLE: prune.py reads it here)


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

    Measured on 2 cores (docs/faster-on-cpu.md): StudentNet's training stage ran 1.86x faster as two
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
    """How a stage trains. The class's defaults are params.yaml's ``student.train`` (and ``distill.train``);
    the teacher's and pruning's fine-tuning differ (``_teacher_train``, ``_finetune_train``)."""

    epochs: int = 12
    batch_size: int = 128
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    crop_padding: int = 0  # random-crop padding in pixels (0 disables)
    flip: bool = True  # random horizontal flip
    label_smoothing: float = 0.0
    eval_batch_size: int = 512
    nproc: Union[int, Literal["auto"]] = 1  # processes (torchrun + DDP) on this machine; batch_size is the
    # global batch. auto: auto_nproc (2 on a Linux CPU with 2+ cores, else 1), see processes()
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present (SHRINK_DEVICE overrides)
    channels_last: bool = True  # NHWC memory format: measured 1.57x for StudentNet on 2 CPU cores
    # which epoch's weights the stage keeps: best (the best on validation) | last (the last epoch's: no epoch is
    # selected on validation, so the ship decision reads images nothing was selected on)
    keep: Literal["best", "last"] = "best"

    def __post_init__(self) -> None:
        _require(self.epochs >= 0, "epochs", self.epochs, "must be >= 0 (0 keeps the model as initialised)")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _require(self.lr > 0, "lr", self.lr, "must be > 0")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        _require(0 <= self.crop_padding <= 64, "crop_padding", self.crop_padding, "must be between 0 and 64 pixels")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        _require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be >= 1")
        if self.nproc != "auto":
            _require(1 <= self.nproc <= 1024, "nproc", self.nproc, "must be between 1 and 1024 processes, or auto")
            _require(self.batch_size % self.nproc == 0, "batch_size", self.batch_size,
                     f"must split evenly over nproc={self.nproc} processes (use a multiple of {self.nproc})")

    def processes(self) -> int:
        """How many processes to start: ``nproc``, with ``auto`` resolved on this machine (``auto_nproc``).

        Called where processes start (``distributed.launch``), never when params are read, so reading
        params.yaml probes no machine and a checkpoint's resolved params keep ``auto`` as written.
        """
        return auto_nproc(self.device, self.batch_size) if self.nproc == "auto" else self.nproc


def _teacher_train() -> TrainParams:
    return TrainParams(epochs=4, batch_size=256, lr=2e-3, weight_decay=5e-4, channels_last=False)


def _finetune_train() -> TrainParams:
    # epochs: never used (each round's own replace it); 3, what prune checkpoints have always recorded. keep: last,
    # so the knee search and the ship rule read validation images no epoch was selected on
    return TrainParams(epochs=3, lr=3e-3, schedule="cosine", keep="last")


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
    train: TrainParams = field(default_factory=_teacher_train)

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
class KDParams:
    """The knowledge-distillation loss's two knobs (``distill.kd_loss``), shared by ``distill`` and
    ``prune.finetune``."""

    temperature: float = 2.0
    alpha: float = 0.5  # the weight of the teacher's soft targets

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "temperature", self.temperature, "must be > 0")
        _require(0 <= self.alpha <= 1, "alpha", self.alpha,
                 "must be in [0, 1] (the weight of the teacher's soft targets)")


@dataclass(frozen=True)
class DistillParams(KDParams):
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class SlimParams:
    l1: float = 0.0  # L1 penalty on BatchNorm gammas of the prunable blocks (Network Slimming)

    def __post_init__(self) -> None:
        _require(self.l1 >= 0, "l1", self.l1, "must be >= 0")


@dataclass(frozen=True)
class _FinetuneSwitch:
    distill: bool = False  # fine-tune with the KD loss from the teacher instead of plain CE


# _FinetuneSwitch is a base of its own, listed last, so that ``distill`` stays the first field: the order
# in which checkpoints (and the course's uint8 files) record their params, byte for byte as before.
@dataclass(frozen=True)
class FinetuneParams(KDParams, _FinetuneSwitch):
    """Fine-tuning after each pruning round (epochs come from the round)."""

    train: TrainParams = field(default_factory=_finetune_train)


@dataclass(frozen=True)
class ControlParams:
    """The equal-budget control (the ``control`` stage): ``parent`` fine-tuned with a round's recipe
    (``prune.finetune``) for ``epochs`` epochs, and not cut. The reference of the ship rule by default.

    Args:
        parent: the unpruned model it fine-tunes (``distill`` or ``student``).
        epochs: fine-tuning epochs: the rounds' own, so that a round and the control differ by the cut alone.
    """

    parent: str = "distill"
    epochs: int = 16

    def __post_init__(self) -> None:
        _require(self.parent in ("distill", "student"), "parent", self.parent,
                 "must be an unpruned model: distill or student")
        _require(self.epochs >= 0, "epochs", self.epochs, "must be >= 0")


@dataclass(frozen=True)
class RoundParams:
    """One pruning round: cut the parent, then fine-tune.

    Args:
        parent: name of the model this round reads (e.g. "distill" or "prune_1").
        width: target width as a fraction of the ORIGINAL (unpruned) widths of the prunable
            layers, cumulative like the course's ``width_mult`` (0.95, 0.9025, ...); ``auto``: the knee
            search picks it (``prune.search``; the stage reads it from ``search/plan/<round>.json``).
        epochs: fine-tuning epochs after the cut.
        after: ``control`` or an earlier round: the round whose result this round's plan reads (the knee search
            probes in this order: the next auto width depends on every earlier probe's result).
    """

    parent: str
    width: Union[float, Literal["auto"]]
    epochs: int = 16
    after: str = "control"

    def __post_init__(self) -> None:
        _require(self.width == AUTO or 0.0 < self.width <= 1.0, "width", self.width,
                 "must be in (0, 1] (a fraction of the unpruned widths) or auto (the knee search picks it)")
        _require(self.epochs >= 0, "epochs", self.epochs, "must be >= 0")

    @property
    def auto(self) -> bool:
        return self.width == AUTO


AUTO = "auto"  # a round's width the knee search picks


@dataclass(frozen=True)
class SearchParams:
    """The knee search (``shrink.search``; stages ``plan@<round>``, ``screen``): the rounds of width ``auto`` bisect
    ``ladder``, each reading the full fine-tunes before it against the control by the ship rule's test
    (``evaluate.max_drop`` at ``evaluate.confidence``).

    Args:
        parent: the model the auto rounds cut (and the screen, when there is one).
        ladder: the widths the bisection walks, any order (sorted widest first).
        epochs: 0: no screen (the first probe is the ladder's middle rung); >= 1: the ``screen`` stage fine-tunes
            each rung and the uncut parent alike for this many epochs and the first probe is its crossing.
    """

    parent: str = "distill"
    ladder: list[float] = field(default_factory=lambda: [0.85, 0.7, 0.5, 0.35, 0.25, 0.18, 0.13, 0.09, 0.065])
    epochs: int = 0

    def __post_init__(self) -> None:
        _require(self.parent in ("distill", "student"), "parent", self.parent,
                 "must be an unpruned model: distill or student")
        _require(all(0.0 < w < 1.0 for w in self.ladder), "ladder", self.ladder, "must hold widths in (0, 1)")
        _require(len(set(self.ladder)) == len(self.ladder), "ladder", self.ladder, "must not repeat a width")
        _require(self.epochs >= 0, "epochs", self.epochs, "must be >= 0 (0: no screen; a cut is not read before "
                 "fine-tuning, so a screen trains at least one epoch)")


PRUNE_MODES = ("layer", "global")
CONTROL = "control"  # the control's model name: models/control.pt, the stage `control`


@dataclass(frozen=True)
class PruneParams:
    """Network Slimming: how channels are chosen (shared by every round), the fine-tuning, and the rounds.

    Args:
        criterion: how channels are ranked, a name in the ``criteria`` registry (checked by ``Params``);
            bn_scale: BatchNorm |gamma| (Network Slimming, the course's).
        bnless_criterion: how a group without a BatchNorm is ranked when ``criterion`` reads BatchNorms only
            (bn_scale): a criterion that reads weights; such groups are cut per layer (``prune.criterion_of``).
        mode: "layer" (the course: per-layer top-k by the criterion) or "global" (Liu et al.: one
            threshold on the scores across the prunable layers, same total count).
        min_channels: floor of channels per pruned layer, so no layer disappears.
        blocks: StudentNet's prunable width indices (the course's 3..6); other archs prune every group.
        round_to: every pruned width is a multiple of this (see ``prune.round_width``); 1 = no rounding.
        finetune: fine-tuning after each cut (and the control's, without one).
        control: the equal-budget control (the ``control`` stage).
        search: the knee search that picks the widths of rounds marked ``auto``.
        rounds: round name -> RoundParams, each one DVC stage (``prune@<name>``).
        scratch: rounds whose pruned architecture is also trained from random initialisation (the stage
            ``scratch@<round>``, ``scratch_model``): distill's recipe for distill's epochs plus the round's, the
            pruned model's total (Liu et al. 2019, Scratch-E): does inheriting the cut's weights matter?
    """

    criterion: str = "bn_scale"
    bnless_criterion: str = "l1"
    mode: Literal["layer", "global"] = "global"
    min_channels: int = 8
    blocks: list[int] = field(default_factory=lambda: list(PRUNABLE_BLOCKS))
    round_to: int = 8
    finetune: FinetuneParams = field(default_factory=lambda: FinetuneParams(temperature=4.0, alpha=0.9))
    control: ControlParams = field(default_factory=ControlParams)
    search: SearchParams = field(default_factory=SearchParams)
    # none by default: DVC makes the prune stages from params.yaml's rounds itself (foreach), so a round
    # named here alone would be one no stage runs
    rounds: dict[str, RoundParams] = field(default_factory=dict)
    scratch: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(self.min_channels >= 1, "min_channels", self.min_channels, "must be >= 1")
        _require(self.round_to >= 1, "round_to", self.round_to, "must be >= 1 (1: the course's exact widths)")
        _require(blocks_ok(self.blocks), "blocks", self.blocks, "must be distinct width indices in 1..6")

    def only(self, name: str) -> "PruneParams":
        """This section with round ``name`` alone (no round for ``CONTROL``): what one round's stage reads and
        records."""
        return dataclasses.replace(self, rounds={} if name == CONTROL else {name: self.rounds[name]})


def scratch_model(round_name: str) -> str:
    """The model name of a round's architecture trained from scratch (``prune.scratch``): models/<it>.pt."""
    return f"scratch_{round_name}"


@dataclass(frozen=True)
class QuantizeParams:
    # fp32 models to quantize besides the prune rounds (every round is quantized by its own quantize-round stage);
    # a round's from-scratch twin (scratch_<round>, its round in prune.scratch) listed here may ship too
    models: list[str] = field(default_factory=lambda: ["distill", CONTROL])
    calibration_images: int = 512  # training images that calibrate int8 activation ranges

    def __post_init__(self) -> None:
        _require(self.calibration_images >= 1, "calibration_images", self.calibration_images, "must be >= 1")


@dataclass(frozen=True)
class EvaluateParams:
    threads: int = 2  # torch / ONNX Runtime intra-op threads for every latency figure
    repeats: int = 15  # timed samples per model and batch size (min and median reported)
    warmup: int = 3  # untimed runs first
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    ship: str = "auto"  # auto | a quantization format's name (shrink.formats): ship only that format's artifacts
    objective: str = "smallest_fast"  # how the artifact that ships is chosen: a name in shrink.ship's registry
    # smallest_fast: points of VALIDATION accuracy an artifact may lose against the reference
    max_drop: float = 0.5
    # the accuracy reference of the ship rule and of "vs reference" figures: control (the equal-budget control)
    # | distill (the unpruned distilled student, a round's epochs shorter)
    reference: Literal["control", "distill"] = CONTROL
    # smallest_fast: an artifact keeps the accuracy when the one-sided lower confidence bound of its paired
    # validation difference to the reference is >= -max_drop (0: the point estimate)
    confidence: float = 0.95
    max_bytes: int = 300_000  # most_accurate: the largest file that may ship (the course's limit)

    def __post_init__(self) -> None:
        _require(self.threads >= 1, "threads", self.threads, "must be >= 1")
        _require(self.repeats >= 1, "repeats", self.repeats, "must be >= 1 (timed runs per model)")
        _require(self.warmup >= 0, "warmup", self.warmup, "must be >= 0")
        _require(bool(self.batch_sizes) and min(self.batch_sizes) >= 1, "batch_sizes", self.batch_sizes,
                 "must be a non-empty list of sizes >= 1")
        _require(0 <= self.max_drop <= 100, "max_drop", self.max_drop, "must be between 0 and 100 (points)")
        _require(self.max_bytes >= 1, "max_bytes", self.max_bytes, "must be >= 1 (bytes)")
        _require(0 <= self.confidence < 1, "confidence", self.confidence,
                 "must be in [0, 1) (0: the point estimate; e.g. 0.95)")
        ships = ["auto", *_registry("formats").list_formats()]
        _require(self.ship in ships, "ship", self.ship, f"must be one of {', '.join(ships)}")
        objectives = _registry("ship").list_objectives()
        _require(self.objective in objectives, "objective", self.objective, f"must be one of {', '.join(objectives)}")


@dataclass(frozen=True)
class Params:
    """The whole params.yaml, typed: ``params.prune.rounds["prune_3"].width``. Built by ``load_params``."""

    seed: int = 0
    data: DataParams = field(default_factory=DataParams)
    student_net: StudentArchParams = field(default_factory=StudentArchParams)
    teacher: TeacherParams = field(default_factory=TeacherParams)
    student: StudentParams = field(default_factory=StudentParams)
    distill: DistillParams = field(default_factory=DistillParams)
    slim: SlimParams = field(default_factory=SlimParams)
    prune: PruneParams = field(default_factory=PruneParams)
    quantize: QuantizeParams = field(default_factory=QuantizeParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    def __post_init__(self) -> None:
        _require(0 <= self.seed < 2**63, "seed", self.seed, "must be a non-negative integer")
        models = _registry("models")
        if self.teacher.small_input and not models.supports_small_input(self.teacher.arch):
            raise FieldError("teacher.small_input", f"not supported by {self.teacher.arch} "
                             f"(use teacher.input_size to feed it larger images)")
        for key, role in (("student_net", "student"), ("teacher", "teacher")):
            try:
                models.check_arch(getattr(self, key).arch, role)
            except ValueError as e:
                raise FieldError(f"{key}.arch", str(e)) from None
        if self.student_net.arch == "studentnet" and self.data.image_size < 16:
            raise FieldError("data.image_size", f"StudentNet halves its input 4 times (its max-pools): it needs at "
                             f"least 16 px, got {self.data.image_size}")
        registry = _registry("criteria")
        criteria = registry.list_criteria()
        if self.prune.criterion not in criteria:
            raise FieldError("prune.criterion", f"must be one of {', '.join(criteria)}, got {self.prune.criterion!r}")
        weights = [c for c in criteria if not registry.get_criterion(c).bn_only]  # what can rank a BN-less group
        if self.prune.bnless_criterion not in weights:
            raise FieldError("prune.bnless_criterion", f"must be one of {', '.join(weights)} (a criterion that reads "
                             f"weights), got {self.prune.bnless_criterion!r}")
        rounds = self.prune.rounds
        if CONTROL in rounds:
            raise FieldError(f"prune.rounds.{CONTROL}", "the control's name (models/control.pt): rename the round")
        for i, (name, r) in enumerate(rounds.items()):
            if r.parent not in ({"student", "distill"} | set(rounds)) - {name}:
                raise FieldError(f"prune.rounds.{name}.parent", f"{r.parent!r} is not a model to prune "
                                 f"(use student, distill or another round's name)")
            earlier = list(rounds)[:i]
            if r.after not in (CONTROL, *earlier):
                raise FieldError(f"prune.rounds.{name}.after", f"{r.after!r}: must be {CONTROL} or a round listed "
                                 f"before {name} ({', '.join(earlier) or 'none'}): the round whose result its plan "
                                 f"reads")
        auto = [name for name, r in rounds.items() if r.auto]
        search = self.prune.search
        for name in auto:
            if rounds[name].parent != search.parent:
                raise FieldError(f"prune.rounds.{name}.parent", f"a round of width auto cuts what the knee search "
                                 f"screened, prune.search.parent ({search.parent!r}), got {rounds[name].parent!r}")
        if auto and not search.ladder:
            raise FieldError("prune.search.ladder", f"round(s) of width auto ({', '.join(auto)}) search a ladder of "
                             f"widths: give at least one, got {search.ladder!r}")
        for i, name in enumerate(self.prune.scratch):
            if name not in rounds:
                raise FieldError(f"prune.scratch[{i}]", f"{name!r} is not a round of prune.rounds (known: "
                                 f"{', '.join(rounds) or 'none'}): scratch trains a round's architecture anew")
        if len(set(self.prune.scratch)) != len(self.prune.scratch):
            raise FieldError("prune.scratch", f"names a round twice: {self.prune.scratch!r}")
        twins = [scratch_model(r) for r in self.prune.scratch]
        known = ["teacher", "student", "distill", CONTROL, *twins]
        for i, m in enumerate(self.quantize.models):
            if m in rounds:
                raise FieldError(f"quantize.models[{i}]", f"{m!r} is a prune round: every round is quantized by "
                                 f"its own quantize-round@{m} stage already; remove it from the list")
            if m not in known:
                twin = next((r for r in rounds if m == scratch_model(r)), None)
                hint = (f": add {twin} to prune.scratch, which trains it" if twin else "")
                raise FieldError(f"quantize.models[{i}]", f"no model named {m!r} (known: {', '.join(sorted(known))})"
                                 f"{hint}")

    @property
    def fp32_models(self) -> list[str]:
        """Every fp32 checkpoint the pipeline makes, in pipeline order (the rounds' from-scratch twins last)."""
        return ["teacher", "student", "distill", CONTROL, *self.prune.rounds,
                *(scratch_model(r) for r in self.prune.scratch)]

    @property
    def quantized_models(self) -> list[str]:
        """Every model with quantized artifacts, in pipeline order: ``quantize.models``, then every round."""
        return [m for m in self.fp32_models if m in self.quantize.models or m in self.prune.rounds]


def _registry(module: str = "models") -> Any:
    """A registry module (``models``: which archs exist and what they support; ``formats``: the quantization
    formats; ``ship``: the ship objectives; ``criteria``: the pruning criteria), imported only to VALIDATE
    params.yaml.

    Deliberately not a dvc.yaml dependency of every stage (nor seen by the import-closure test, being
    dynamic): validation can only reject a params file, never change what a stage computes, so an edit to
    models.py must not rerun data preparation. Imported at call time: it imports torch.
    """
    import importlib

    return importlib.import_module(f"{__package__}.{module}")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``path`` and validate the whole file into one typed ``Params``.

    Raises:
        ParamsError: the file is missing or not YAML, or any section, key or value is wrong; the message
            is ``params.yaml: <section>.<key>: <why>``.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the project folder, or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return validate(raw)


def validate(raw: dict[str, Any]) -> Params:
    """The typed ``Params`` of a params mapping (as read from YAML); ParamsError names the first bad key."""
    return from_dict(Params, raw, "")
