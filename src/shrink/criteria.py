"""Pruning criteria: how the channels of a prunable group are ranked (``prune.criterion``), one registry entry each.

The *criterion* part of pruning (``prune`` holds the groups, the selection and the surgery). Every entry is one
of Torch-Pruning's ``tp.importance`` classes, called on the Torch-Pruning group of each prunable group of a
traced net (``prune.Graph``); it returns one score per channel, indexed like the group's channels (the root
layer's output channels, Torch-Pruning's ``root_idxs``). Higher scores are kept.

Per channel, normalised within its group as Torch-Pruning does by default unless said:

* ``bn_scale``: ``BNScaleImportance``, the mean |gamma| of the group's BatchNorms, raw (not normalised): the
  course's criterion and Network Slimming's (Liu et al.). It reads BatchNorms only (``bn_only``): a group without
  one (MobileNetV3's hidden classifier Linear, squeeze-excitation's reduced channels) is ranked by
  ``prune.bnless_criterion`` instead (``prune.criterion_of``).
* ``l1``, ``l2``: ``GroupMagnitudeImportance(p=1 / 2)``, the mean over the group's layers of the L1 / squared L2
  norm of the channel's weights, divided by the group's mean.
* ``taylor``: ``GroupTaylorImportance``, the mean over the layers of sum |weight x gradient| of the cross-entropy
  on a sample of training images (Molchanov et al.), divided by the group's mean.
* ``lamp``: ``LAMPImportance``, the squared L2 magnitude as ``l2``, then LAMP's score (Lee et al.): a score over
  the sum of the group's scores not smaller than it.
* ``random``: ``RandomImportance``, uniform in [0, 1), seeded with the run's ``seed``: the floor any criterion
  must beat.

What the weight criteria read is Torch-Pruning 1.6.1's choice, kept as it is: the dense convolutions and linears
of the group (the producers' filters and the consumers' input columns) and, for the magnitudes, its BatchNorms'
gammas; not the depthwise convolutions (their pruning function is not the dense conv's, which is what the
classes look for), and ``taylor`` not the BatchNorms either.

Why the normalisations matter: ``prune.mode: global`` ranks every group's scores together. The entries keep
Torch-Pruning's own defaults, which are what its global pruning compares (a group's scores divided by their
mean, so a wide group of large weights does not swallow the budget), except ``bn_scale``: raw |gamma| is
Network Slimming's global threshold (the L1 penalty ``slim.l1`` makes gammas comparable across layers), the
course's criterion, kept exactly as it was. In layer mode none of them changes a ranking (each normalisation
is increasing within its group).

A criterion that reads gradients gets them here: ``score_groups`` runs the cross-entropy of a sample of
training images backward through the net in eval mode (the BatchNorm statistics do not move) and puts every
parameter's gradient, and the net's mode, back as they were after scoring. A seeded criterion draws from torch's
generator seeded with ``seed`` inside a fork of its state: a rerun keeps the same channels, and the global stream
(training's) goes on as if nothing had been drawn.

Adding a criterion is one ``register_criterion`` call; the tests run over ``list_criteria()``, and
``prune.criterion``'s allowed values are this registry's names.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

import torch_pruning as tp

Sample = tuple[torch.Tensor, torch.Tensor]  # normalised float images (N, 3, H, W) and their int64 labels
GRADIENT_BATCH = 64  # images per forward/backward when a criterion reads gradients (memory, not the result's scale)


@dataclass(frozen=True)
class Criterion:
    """One registry entry.

    Args:
        name: the value of ``prune.criterion``.
        make: builds the Torch-Pruning importance (called once per scoring).
        doc: one line for listings.
        sample_images: training images whose loss gradients it reads (0: none, it needs no data).
        seeded: it draws random numbers (from a generator seeded with the run's seed).
        bn_only: it reads BatchNorms only, so it cannot rank a group that holds none.
    """

    name: str
    make: Callable[[], tp.importance.Importance]
    doc: str
    sample_images: int = 0
    seeded: bool = False
    bn_only: bool = False


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, make: Callable[[], tp.importance.Importance], doc: str, *,
                       sample_images: int = 0, seeded: bool = False, bn_only: bool = False) -> Criterion:
    """Add a criterion to the registry (a name may be registered once); returns its entry."""
    if name in _CRITERIA:
        raise ValueError(f"criterion {name!r} is registered already")
    _CRITERIA[name] = Criterion(name, make, doc, sample_images, seeded, bn_only)
    return _CRITERIA[name]


def list_criteria() -> list[str]:
    """The registered criteria's names, in registration order (the default first)."""
    return list(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    """The entry named ``name``; ValueError naming the known ones otherwise."""
    if name not in _CRITERIA:
        raise ValueError(f"unknown pruning criterion {name!r} (known: {', '.join(_CRITERIA)})")
    return _CRITERIA[name]


register_criterion("bn_scale", lambda: tp.importance.BNScaleImportance(normalizer=None),
                   "mean |gamma| of the group's BatchNorms (Network Slimming, the course's)", bn_only=True)
register_criterion("l1", lambda: tp.importance.GroupMagnitudeImportance(p=1), "group L1 norm of the weights")
register_criterion("l2", lambda: tp.importance.GroupMagnitudeImportance(p=2), "group L2 norm of the weights")
register_criterion("taylor", lambda: tp.importance.GroupTaylorImportance(),
                   "first-order Taylor |weight x gradient| of the cross-entropy", sample_images=256)
register_criterion("lamp", lambda: tp.importance.LAMPImportance(), "LAMP scores of the L2 weight magnitudes")
register_criterion("random", lambda: tp.importance.RandomImportance(), "uniform random (the sanity floor)",
                   seeded=True)


@contextlib.contextmanager
def loss_gradients(model: nn.Module, sample: Sample) -> Iterator[None]:
    """Inside: every parameter's ``.grad`` is the gradient of the mean cross-entropy of ``sample`` (eval mode).

    After: the parameters' gradients and ``requires_grad`` flags and the net's mode are as they were.

    Args:
        model: the net (its weights are not changed).
        sample: normalised images and labels (``data.train_sample``).
    """
    images, labels = sample
    params = list(model.parameters())
    saved = [(p.grad, p.requires_grad) for p in params]
    was_training = model.training
    device = params[0].device
    try:
        model.eval()  # a train-mode forward would move the BatchNorm running statistics
        for p in params:
            p.grad = None
            p.requires_grad_(True)
        with torch.enable_grad():
            for start in range(0, len(labels), GRADIENT_BATCH):
                x, y = images[start:start + GRADIENT_BATCH].to(device), labels[start:start + GRADIENT_BATCH].to(device)
                (F.cross_entropy(model(x), y, reduction="sum") / len(labels)).backward()
        yield
    finally:
        for p, (grad, flag) in zip(params, saved):
            p.grad = grad
            p.requires_grad_(flag)
        model.train(was_training)


def score_groups(model: nn.Module, groups: Mapping[str, tp.dependency.Group], criterion: str, *,
                 sample: Optional[Sample] = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """{group name: one score per channel (float32, CPU)} by criterion ``criterion``.

    Args:
        model: the traced net the groups belong to (a criterion that reads gradients runs it).
        groups: {name: Torch-Pruning group holding all its channels}, e.g. ``prune.Graph``'s.
        criterion: a registered name (``prune.criterion``).
        sample: training images and labels, required when the criterion reads gradients.
        seed: seeds a criterion that draws random numbers (the run's ``seed``).
    """
    entry = get_criterion(criterion)
    if entry.sample_images and sample is None:
        raise ValueError(f"pruning criterion {criterion!r} reads gradients: pass a sample of training images")
    importance = entry.make()
    with contextlib.ExitStack() as stack:
        if entry.sample_images:
            stack.enter_context(loss_gradients(model, sample))
        if entry.seeded:
            stack.enter_context(torch.random.fork_rng(devices=[]))  # the global stream stays as it was
            torch.manual_seed(seed)
        return {name: _checked(importance(g), name, criterion, len(g[0].idxs)) for name, g in groups.items()}


def _checked(score: Optional[torch.Tensor], group: str, criterion: str, channels: int) -> torch.Tensor:
    if score is None:  # e.g. bn_scale on a group without a BatchNorm
        raise ValueError(f"pruning criterion {criterion!r} cannot score group {group} (no layer it reads)")
    score = score.detach().float().cpu()
    if score.shape != (channels,) or not torch.isfinite(score).all():
        raise ValueError(f"pruning criterion {criterion!r} gave group {group} ({channels} channels) "
                         f"{'non-finite scores' if score.shape == (channels,) else f'{tuple(score.shape)} scores'}")
    return score
