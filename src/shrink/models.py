"""Model registry: the course's StudentNet, every torchvision classification model, and EfficientNet-Lite0
(a teacher, from the optional extra ``pretrained``).

One ``ModelEntry`` per architecture (timm's ``register_model``, as data): its factory, the input
normalisation its published weights expect, whether it takes the small-input stem, which roles it may
play, and how pruning treats it (``Slimming``). Every function here asks the entry; none branches on
where an arch comes from. ``build_model(name, num_classes, **kw)`` is the one way stages make models,
so a checkpoint that stores ``name`` and ``kw`` rebuilds its network without guessing.

Why one module: every entry's factory, the nets the registry defines itself (StudentNet, the teacher's
``InputAdapter``) and the functions that ask the entries are read together when an arch is added; split, each
part would import the others. (~490 lines; ``teacher_kwargs``/``InputAdapter`` could move out if it grows.)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .student_shape import MULTIPLIER, PRUNABLE_BLOCKS, blocks_ok, student_widths  # noqa: F401 (re-exported)


def check_blocks(blocks: Sequence[int]) -> None:
    """ValueError unless ``blocks`` are distinct StudentNet width indices (``student_shape.CUTTABLE``)."""
    if not blocks_ok(blocks):
        raise ValueError(f"prunable blocks must be distinct width indices in 1..6, got {list(blocks)}")


class StudentNet(nn.Module):
    """MobileNet-v1-style student of NTU ML2020 HW7, module for module.

    Its ``state_dict`` keys (``cnn.{i}.{j}.*``, ``fc.0.*``) and shapes equal the course's, so a
    course checkpoint loads with ``strict=True``. ``widths`` (8 ints) overrides ``base`` and
    ``width_mult``; pruning uses it to build the smaller dense network.

    Args:
        base: channels of the stem; block i has ``base * MULTIPLIER[i]``.
        width_mult: the course's multiplier for blocks 3..6.
        num_classes: size of the output layer (11 for Food-11).
        widths: explicit per-block widths, e.g. from a pruned checkpoint.
    """

    def __init__(
        self,
        base: int = 16,
        width_mult: float = 1.0,
        num_classes: int = 11,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        w = list(widths) if widths is not None else student_widths(base, width_mult)
        if len(w) != 8 or min(w) < 1:
            raise ValueError(f"StudentNet needs 8 positive widths, got {w}")
        self.widths = w
        self.num_classes = num_classes

        def block(i: int, pool: bool) -> nn.Sequential:
            # depthwise 3x3, BN, ReLU6, pointwise 1x1 (no activation after it, as in the course)
            layers: list[nn.Module] = [
                nn.Conv2d(w[i - 1], w[i - 1], 3, 1, 1, groups=w[i - 1]),
                nn.BatchNorm2d(w[i - 1]),
                nn.ReLU6(),
                nn.Conv2d(w[i - 1], w[i], 1),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2, 2, 0))
            return nn.Sequential(*layers)

        self.cnn = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1), nn.BatchNorm2d(w[0]), nn.ReLU6(), nn.MaxPool2d(2, 2, 0)),
            block(1, True),
            block(2, True),
            block(3, True),
            block(4, False),
            block(5, False),
            block(6, False),
            block(7, False),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.fc = nn.Sequential(nn.Linear(w[7], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cnn(x)
        return self.fc(out.flatten(1))


def _student(num_classes: int, base: int = 16, width_mult: float = 1.0, widths: Sequence[int] | None = None) -> nn.Module:
    return StudentNet(base=base, width_mult=width_mult, num_classes=num_classes, widths=widths)


def _student_layer_widths(model: StudentNet) -> list[int]:
    """The 8 widths read from the layers themselves (pruning's surgery leaves ``model.widths`` stale)."""
    return [model.cnn[0][0].out_channels] + [model.cnn[i][3].out_channels for i in range(1, 8)]


def _student_groups(blocks: Sequence[int]) -> list[str]:
    """StudentNet's prunable groups for ``prune.blocks``: the channels each pointwise ``cnn.{j}.3`` produces."""
    check_blocks(blocks)
    return [f"cnn.{j}.3" for j in blocks]


def _student_rebuild(model: StudentNet) -> StudentNet:
    """A clean ``StudentNet(widths=...)`` holding a cut net's weights: the course's state_dict format."""
    ref = next(model.parameters())
    student = StudentNet(widths=_student_layer_widths(model), num_classes=model.num_classes)
    student.load_state_dict(model.state_dict(), strict=True)
    return student.to(device=ref.device, dtype=ref.dtype)


# Torchvision nets this pipeline cannot slim, and why (checked with Torch-Pruning 1.6.1, torch 2.14.1).
UNSLIMMABLE = {
    "shufflenet_v2": "Torch-Pruning 1.6.1 fails on its channel shuffle (ZeroDivisionError while tracing the groups)",
}


def torchvision_archs() -> list[str]:
    """Every torchvision classification model name (``torchvision.models.list_models(module=torchvision.models)``)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def adapt_small_input(model: nn.Module) -> nn.Module:
    """Make an ImageNet net fit small (e.g. 28 px) inputs: the stem convolution gets stride 1, and a max-pool
    right after it (ResNet, RegNet-style stems) becomes the identity.

    Why: torchvision classifiers downsample 32x; at 28 px the last stages see 1x1 maps (or padding only).
    Removing the stem's 2x (4x with the pool) keeps 4x more (16x) spatial positions, at the cost of
    ~4x (16x) more compute in the early layers. The change is to strides only: no weight changes shape.
    """
    stem_done = False
    for name, m in model.named_modules():
        if not stem_done and isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            m.stride = (1, 1)
            stem_done = True
            continue
        if stem_done:
            if isinstance(m, nn.MaxPool2d):
                parent, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
                break
            if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
                break  # the next downsampling is a conv: leave it
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def structure_of(model: nn.Module) -> dict[str, list[int]]:
    """The channel structure of a (possibly pruned) net as plain data: ``{module: [in, out, groups]}`` for
    every Conv2d, ``[in, out]`` for every Linear, ``[features]`` for every BatchNorm (SyncBatchNorm too)."""
    out: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.Linear):
            out[name] = [m.in_features, m.out_features]
        elif isinstance(m, _BatchNorm):
            out[name] = [m.num_features]
    return out


def apply_structure(model: nn.Module, structure: dict[str, Sequence[int]]) -> nn.Module:
    """Give ``model``'s layers the channel counts ``structure`` records (``structure_of`` of a pruned net),
    replacing each layer whose shape differs by a fresh one of the recorded shape (weights come after).

    Raises:
        ValueError: a recorded layer does not exist or is of another kind.
    """
    modules = dict(model.named_modules())
    for name, spec in structure.items():
        m, spec = modules.get(name), [int(v) for v in spec]
        if isinstance(m, nn.Conv2d) and len(spec) == 3:
            if spec != [m.in_channels, m.out_channels, m.groups]:
                _replace(model, name, nn.Conv2d(spec[0], spec[1], m.kernel_size, m.stride, m.padding, m.dilation,
                                                spec[2], m.bias is not None, m.padding_mode))
        elif isinstance(m, nn.Linear) and len(spec) == 2:
            if spec != [m.in_features, m.out_features]:
                _replace(model, name, nn.Linear(spec[0], spec[1], m.bias is not None))
        elif isinstance(m, _BatchNorm) and len(spec) == 1:
            if spec[0] != m.num_features:  # same class: a SyncBatchNorm stays one
                _replace(model, name, type(m)(spec[0], m.eps, m.momentum, m.affine, m.track_running_stats))
        else:
            raise ValueError(f"structure names layer {name!r} ({spec}), which this arch has not "
                             f"(or not of that kind: {type(m).__name__})")
    return model


def _torchvision(
    arch: str, num_classes: int, small_input: bool = False, structure: dict[str, Sequence[int]] | None = None,
) -> nn.Module:
    """A torchvision classifier with ``num_classes`` outputs, randomly initialised (pretrained weights come
    from a tracked file: ``pretrained.load_backbone``).

    Args:
        arch: a torchvision classification model name.
        small_input: see ``adapt_small_input``.
        structure: pruned channel counts (``structure_of``), applied before the weights load.
    """
    model = torchvision.models.get_model(arch, num_classes=num_classes)
    if small_input:
        adapt_small_input(model)
    if structure:
        apply_structure(model, structure)
    return model


EXTRA = "pretrained"  # the pyproject extra that brings the EfficientNet-Lite code and weights


def _efficientnet_lite():
    """``efficientnet_lite_pytorch.EfficientNet``, or an ImportError naming the extra that brings it."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError(f"efficientnet_lite0 needs the optional extra '{EXTRA}': pip install -e '.[{EXTRA}]'") from None
    return EfficientNet


def _efficientnet_lite0(num_classes: int, image_size: int = 224) -> nn.Module:
    """EfficientNet-Lite0 (ReLU6, no squeeze-excite: built for int8 phones) from ``efficientnet-lite-pytorch``.

    Args:
        image_size: the size the net sees; its TensorFlow-style "same" padding is computed for it once
            (static padding exports to ONNX as plain pads).
    """
    model = _efficientnet_lite().from_name("efficientnet-lite0", num_classes=num_classes, image_size=image_size)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            # TensorFlow's 0.99 decay (torch momentum 0.01) is for ImageNet-length runs; a few hundred
            # fine-tuning steps on new data need the running statistics to follow faster
            m.momentum = 0.1
    return model


# Per-channel (mean, std) on the 0..1 scale that published weights were trained with.
NORMS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # every torchvision classifier
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # TF-style [-1, 1]: EfficientNet-Lite, Inception
}


@dataclass(frozen=True)
class Slimming:
    """How pruning treats an arch (``prune.py`` asks this instead of testing classes).

    Args:
        groups: ``groups(prune.blocks)`` -> the names of the prunable groups (data per arch, e.g. StudentNet's
            course blocks); None: every traced group but the classifier's output.
        rebuild: ``rebuild(cut net)`` -> the net to keep after the surgery (StudentNet: a clean
            ``StudentNet(widths=...)``); the identity by default.
        rebuild_kwargs: ``rebuild_kwargs(cut net, parent's model_kwargs)`` -> ``model_kwargs`` that rebuild it
            (plain data): the parent's plus the channel ``structure`` by default.
    """

    groups: Optional[Callable[[Sequence[int]], list[str]]] = None
    rebuild: Callable[[nn.Module], nn.Module] = lambda model: model
    rebuild_kwargs: Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]] = (
        lambda model, kwargs: {**kwargs, "structure": structure_of(model)})


@dataclass(frozen=True)
class ModelEntry:
    """One architecture of the registry.

    Args:
        name: registry name, stored in checkpoints as ``model``.
        factory: ``factory(num_classes, **model_kwargs) -> nn.Module`` (randomly initialised).
        norm: the input normalisation its published weights expect (a key of ``NORMS``).
        small_input: the factory takes ``small_input`` (``adapt_small_input``).
        image_size: the factory takes ``image_size`` (its padding is computed for one input size).
        refuse: {role: why it cannot play it} for the roles "student" and "teacher".
        requires: raises ImportError naming the optional extra that brings the arch, when missing.
        student_kwargs: ``(base, width_mult, small_input) -> model_kwargs`` of a fresh student.
        module_type: the class the factory returns, so a built net finds its ``slimming`` (``slimming_of``).
        slimming: how pruning treats it.
    """

    name: str
    factory: Callable[..., nn.Module]
    norm: str = "imagenet"
    small_input: bool = True
    image_size: bool = False
    refuse: Mapping[str, str] = field(default_factory=dict)
    requires: Optional[Callable[[], Any]] = None
    student_kwargs: Callable[[int, float, bool], dict[str, Any]] = (
        lambda base, width_mult, small_input: {"small_input": small_input})
    module_type: Optional[type] = None
    slimming: Slimming = Slimming()


REGISTRY: dict[str, ModelEntry] = {}  # name -> entry
_BY_TYPE: dict[type, ModelEntry] = {}  # module_type -> entry


def register(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` under its name."""
    taken = ([entry.name] if entry.name in REGISTRY else []) + (
        [entry.module_type.__name__] if entry.module_type in _BY_TYPE else [])
    if taken:
        raise ValueError(f"model {taken[0]!r} is registered twice")
    REGISTRY[entry.name] = entry
    if entry.module_type is not None:
        _BY_TYPE[entry.module_type] = entry
    return entry


def list_models() -> list[str]:
    """Every registered arch name, sorted: what ``build_model`` accepts."""
    return sorted(REGISTRY)


register(ModelEntry(
    "studentnet", _student, small_input=False,
    refuse={"teacher": "use a torchvision classification model"},
    student_kwargs=lambda base, width_mult, small_input: {"widths": student_widths(base, width_mult)},
    module_type=StudentNet,
    slimming=Slimming(groups=_student_groups, rebuild=_student_rebuild,
                      rebuild_kwargs=lambda model, kwargs: {"widths": _student_layer_widths(model)}),
))
register(ModelEntry(
    "efficientnet_lite0", _efficientnet_lite0,
    norm="inception",  # TF-Lite models take pixels scaled to [-1, 1]
    small_input=False, image_size=True,  # its static "same" padding is computed for a stride-2 stem and one size
    refuse={"student": "a teacher only (not tested with pruning and int8 export)"},
    requires=_efficientnet_lite,
))
for _arch in torchvision_archs():
    _why = next((why for prefix, why in UNSLIMMABLE.items() if _arch.startswith(prefix)), None)
    register(ModelEntry(_arch, functools.partial(_torchvision, _arch), refuse={"student": _why} if _why else {}))


def get_entry(name: str) -> ModelEntry:
    """The entry of ``name``; KeyError naming it if there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}: use studentnet or a torchvision classification model (torchvision"
                       f".models.list_models(module=torchvision.models), e.g. mobilenet_v3_small)") from None


def slimming_of(model: nn.Module) -> Slimming:
    """How pruning treats ``model``: its class's entry's ``slimming``; the default (every torchvision entry's)
    for a class no entry names."""
    entry = _BY_TYPE.get(type(model))
    return entry.slimming if entry is not None else Slimming()


def supports_small_input(arch: str) -> bool:
    """Whether ``arch`` takes ``small_input`` (EfficientNet-Lite takes ``input_size`` instead)."""
    return get_entry(arch).small_input


class InputAdapter(nn.Module):
    """Feeds a net trained elsewhere the input it expects, from the pipeline's data-normalised batch.

    Every stage normalises images with the training split's mean/std (``data.normalizer``); a pretrained
    teacher wants its own normalisation (ImageNet's) and often more pixels than 28. Doing both inside the
    teacher keeps the rest of the pipeline unchanged: distillation, pruning's KD and evaluate hand the
    teacher the same batch as the student, and the teacher sees its own size and scale.

    Args:
        net: the wrapped classifier.
        size: resize (bilinear) to ``size`` x ``size`` pixels; None keeps the size.
        norm: ``{"data_mean", "data_std", "mean", "std"}`` (0..1 scale): undo the data normalisation and
            apply ``mean``/``std``; None keeps the data normalisation.
    """

    def __init__(self, net: nn.Module, size: int | None = None, norm: dict[str, Sequence[float]] | None = None) -> None:
        super().__init__()
        self.net, self.size = net, size
        scale, shift = torch.ones(3), torch.zeros(3)
        if norm is not None:
            dm, ds, m, sd = (torch.tensor(norm[k], dtype=torch.float32) for k in ("data_mean", "data_std", "mean", "std"))
            scale, shift = ds / sd, (dm - m) / sd  # (x * ds + dm - m) / sd, folded into one affine map
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)  # rebuilt from model_kwargs
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.renorm = norm is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.renorm:
            x = x * self.scale + self.shift
        if self.size is not None and x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.net(x)


def unwrap(model: nn.Module) -> nn.Module:
    """The classifier inside an ``InputAdapter`` (or the model itself)."""
    return model.net if isinstance(model, InputAdapter) else model


def teacher_kwargs(
    arch: str, small_input: bool, input_size: int | None, input_norm: str, pretrained: bool,
    data_size: int, data_mean: Sequence[float], data_std: Sequence[float],
) -> dict:
    """``model_kwargs`` of a fresh teacher (plain data, stored in its checkpoint).

    Args:
        input_size: the size the teacher sees (None: ``data_size``).
        input_norm: ``auto`` (the weights' own normalisation when ``pretrained``, else the data's), ``data``,
            or a key of ``NORMS``.
        pretrained: weights will be loaded (``auto`` then means the arch's published normalisation).
        data_size, data_mean, data_std: the prepared data's image size and normalisation.
    """
    entry = get_entry(arch)
    kw: dict = {}
    if entry.small_input:
        kw["small_input"] = small_input
    if entry.image_size:
        kw["image_size"] = input_size or data_size
    if input_size is not None and input_size != data_size:
        kw["input_size"] = input_size
    norm = (entry.norm if pretrained else "data") if input_norm == "auto" else input_norm
    if norm != "data":
        mean, std = NORMS[norm]
        kw["input_norm"] = {"name": norm, "data_mean": list(data_mean), "data_std": list(data_std),
                            "mean": list(mean), "std": list(std)}
    return kw


def output_layer_name(model: nn.Module) -> str:
    """The classifier's output layer: the last ``nn.Linear`` in module order (torchvision's and StudentNet's)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer")
    return names[-1]


def check_arch(name: str, role: str) -> None:
    """ValueError naming ``name`` and why, unless it can be this pipeline's ``role`` ('student' or 'teacher').

    A student must be slimmable: it needs BatchNorm layers (Network Slimming ranks channels by their
    gamma) and Torch-Pruning must be able to trace it.
    """
    try:
        entry = get_entry(name)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    if role in entry.refuse:
        raise ValueError(f"model {name!r} cannot be the {role}: {entry.refuse[role]}")
    if entry.requires is not None:
        try:
            entry.requires()
        except ImportError as e:
            raise ValueError(f"model {name!r}: {e}") from None
    if role != "student":
        return
    try:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = entry.factory(2, **entry.student_kwargs(16, 1.0, False))
    except NotImplementedError:  # a builder that reads tensor values (torchvision's regnet): build it for real
        model = entry.factory(2, **entry.student_kwargs(16, 1.0, False))
    if not any(isinstance(m, _BatchNorm) for m in model.modules()):
        raise ValueError(f"model {name!r} cannot be a student: it has no BatchNorm2d, so Network Slimming has no "
                         f"gammas to rank channels by (e.g. convnext/vit use LayerNorm)")


def build_model(name: str, num_classes: int, **kw) -> nn.Module:
    """Build a model by registry name (``list_models()``).

    Args:
        name: ``studentnet``, ``efficientnet_lite0`` or a torchvision classification model name.
        num_classes: number of output classes.
        **kw: the factory's own arguments (stored in checkpoints as ``model_kwargs``): StudentNet's
            ``base``/``width_mult``/``widths``; torchvision's ``small_input``, ``structure``; EfficientNet-Lite's
            ``image_size``; and for any net ``input_size``/``input_norm`` (``teacher_kwargs``), which wrap it in
            an ``InputAdapter``.
    """
    size, norm = kw.pop("input_size", None), kw.pop("input_norm", None)
    model = get_entry(name).factory(num_classes, **kw)
    return InputAdapter(model, size, norm) if size is not None or norm is not None else model


def student_kwargs(arch: str, base: int, width_mult: float, small_input: bool) -> dict:
    """``model_kwargs`` of a fresh student: StudentNet's widths, or a torchvision net's input adaptation."""
    return get_entry(arch).student_kwargs(base, width_mult, small_input)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
