"""Model registry: the course's StudentNet and a torchvision ResNet18 teacher.

``build_model(name, num_classes, **kw)`` is the one way stages make models, so a checkpoint
that stores ``name`` and ``kw`` rebuilds its network without guessing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torchvision
from torch import nn

# The course's channel multipliers: base*m for each of the 8 conv blocks.
MULTIPLIER = (1, 2, 4, 8, 16, 16, 16, 16)
# Blocks whose width the course's ``width_mult`` scales (and that pruning cuts by default).
PRUNABLE_BLOCKS = (3, 4, 5, 6)


def student_widths(base: int = 16, width_mult: float = 1.0) -> list[int]:
    """The course's ``bandwidth`` list: 8 block widths, blocks 3..6 scaled by ``width_mult``."""
    widths = [base * m for m in MULTIPLIER]
    for i in PRUNABLE_BLOCKS:
        widths[i] = int(widths[i] * width_mult)
    return widths


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


def _resnet18(num_classes: int, pretrained: str = "none") -> nn.Module:
    """torchvision ResNet18; ``pretrained='imagenet'`` loads the ImageNet weights from the local torch cache only."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    if pretrained == "imagenet":
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not path.is_file():
            raise FileNotFoundError(
                f"teacher.pretrained: imagenet needs torchvision's ResNet18 weights at {path}; "
                f"this pipeline never downloads. Fetch {weights.url} on a machine with internet and "
                f"copy it there (or set TORCH_HOME), or set teacher.pretrained: none."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # new head for our classes
        missing, _ = model.load_state_dict(state, strict=False)
        assert set(missing) == {"fc.weight", "fc.bias"}, missing
    elif pretrained != "none":
        raise ValueError(f"teacher.pretrained must be 'none' or 'imagenet', got {pretrained!r}")
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "student": _student,
    "resnet18": _resnet18,
}


def build_model(name: str, num_classes: int, **kw) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a key of ``MODELS``.
        num_classes: number of output classes.
        **kw: the factory's own arguments (stored in checkpoints as ``model_kwargs``).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](num_classes, **kw)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
