"""Network Slimming (Liu et al. 2017) for StudentNet, with physical removal of channels.

A prunable channel ``c`` of width index ``j`` (the output channels of pointwise ``cnn.j.3``) is
coupled across four places, as the course's table says:

* rows ``c`` of ``cnn.j.3.weight`` / ``cnn.j.3.bias`` (the pointwise that produces it),
* filter ``c`` of the depthwise ``cnn.{j+1}.0`` (weight and bias),
* entry ``c`` of the BatchNorm ``cnn.{j+1}.1`` (weight, bias, running_mean, running_var),
* input columns ``c`` of the pointwise ``cnn.{j+1}.3.weight``.

Its importance is ``|gamma|`` of ``cnn.{j+1}.1.weight``. Cutting a channel removes it from all
four places and builds a smaller *dense* ``StudentNet(widths=...)``, so the speed-up is real.

Differences from the course's ``network_slimming``:

* the course ranks by the raw gamma; we rank by ``|gamma|`` (a large negative gamma scales its
  channel as much as a large positive one; Liu et al. also use the magnitude);
* the course stores the kept channels in ranking order (it permutes every layer, even the ones it
  does not cut); we keep them in their original order (sorted indices), which computes the same
  function and keeps a pruned checkpoint's channel ``i`` traceable to the parent's;
* the course cuts each layer to ``int(bandwidth * width_mult)`` ("layer" mode, the default and
  the same count); "global" mode instead ranks all prunable gammas together (Liu et al.);
* a floor of ``min_channels`` per layer, so no layer is ever pruned away;
* every kept count is rounded to a multiple of ``round_to`` (8 by default; 1 gives the course's
  counts exactly), see ``round_width``. Why: ONNX Runtime runs convolutions in a blocked (NCHWc)
  layout whose blocks are 8 channels (AVX2; 16 with AVX-512); counts off the grid, such as the
  course's 121/243 ... 99/198, fall back to slower kernels. Measured (ORT 1.31 fp32, 2 threads, batch
  64, fastest of 400 interleaved calls on a loaded 2-core AVX2 box): unpruned 1.97 ms, the fifth round
  at 99/198 channels 6.64 ms (slower than no pruning at all), at 96/200 2.20 ms; the fourth round's
  104/208, a multiple of 8 by chance, 1.87 ms.

The L1 penalty on gammas that makes them sparse is ``bn_l1_hook``, plugged into
``train.train_one_epoch(after_backward=...)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from .models import PRUNABLE_BLOCKS, StudentNet

MODES = ("layer", "global")
# Width indices whose channels follow the pointwise -> depthwise/BN/pointwise coupling above. Width 0
# is produced by the stem (conv + its own BN) and width 7 feeds the classifier with no BN after it.
CUTTABLE = range(1, 7)


@dataclass(frozen=True)
class PruneParams:
    """How channels are chosen (shared by every pruning round).

    Args:
        mode: "layer" (the course: per-layer top-k by |gamma|) or "global" (Liu et al.: one
            threshold on |gamma| across the prunable layers, same total count).
        min_channels: floor of channels per pruned layer, so no layer disappears.
        blocks: prunable width indices (the course's 3..6).
        round_to: every pruned width is a multiple of this (see ``round_width``); 1 = no rounding.
    """

    mode: str = "layer"
    min_channels: int = 8
    blocks: list[int] = field(default_factory=lambda: list(PRUNABLE_BLOCKS))
    round_to: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"prune.mode must be one of {MODES}, got {self.mode!r}")
        if self.min_channels < 1:
            raise ValueError(f"prune.min_channels must be >= 1, got {self.min_channels}")
        if self.round_to < 1:
            raise ValueError(f"prune.round_to must be >= 1, got {self.round_to}")
        _check_blocks(self.blocks)


@dataclass(frozen=True)
class RoundParams:
    """One pruning round: cut the parent, then fine-tune.

    Args:
        parent: name of the model this round reads (e.g. "distill" or "prune_1").
        width: target width as a fraction of the ORIGINAL (unpruned) widths of the prunable
            layers, cumulative like the course's ``width_mult`` (0.95, 0.9025, ...).
        epochs: fine-tuning epochs after the cut.
    """

    parent: str
    width: float
    epochs: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.width <= 1.0:
            raise ValueError(f"prune round width must be in (0, 1], got {self.width}")
        if self.epochs < 0:
            raise ValueError(f"prune round epochs must be >= 0, got {self.epochs}")


def _check_blocks(blocks: Sequence[int]) -> None:
    bad = [j for j in blocks if j not in CUTTABLE]
    if bad or len(set(blocks)) != len(blocks):
        raise ValueError(f"prunable blocks must be distinct width indices in 1..6, got {list(blocks)}")


def bn_of(model: StudentNet, j: int) -> nn.BatchNorm2d:
    """The BatchNorm whose gammas rank the channels of width index ``j`` (``cnn.{j+1}.1``)."""
    return model.cnn[j + 1][1]


def importance(model: StudentNet, j: int) -> torch.Tensor:
    """``|gamma|`` of width index ``j``'s channels (detached, on the CPU)."""
    return bn_of(model, j).weight.detach().abs().cpu()


def widths_of(model: StudentNet) -> list[int]:
    """The 8 widths read from the layers themselves (not from ``model.widths``)."""
    return [model.cnn[0][0].out_channels] + [model.cnn[i][3].out_channels for i in range(1, 8)]


def target_widths(base_widths: Sequence[int], width: float, blocks: Sequence[int] = PRUNABLE_BLOCKS) -> dict[int, int]:
    """Channels per prunable layer at ``width``: the course's ``int(bandwidth[i] * width_mult)``.

    Args:
        base_widths: the 8 widths of the unpruned network.
        width: fraction of ``base_widths`` to keep.
        blocks: prunable width indices.
    """
    # same expression as models.student_widths, so width=0.95 gives the course's 121/243 exactly
    return {j: int(base_widths[j] * width) for j in blocks}


def round_width(count: int, current: int, round_to: int, floor: int = 1) -> int:
    """``count`` rounded to the nearest multiple of ``round_to`` (halves up), kept in bounds.

    The result is a multiple of ``round_to`` in ``[max(floor, round_to), current]``, the one nearest
    to ``count``. If that range holds no multiple (the layer is narrower than ``round_to``, or
    than the next multiple above ``floor``), the layer keeps all its ``current`` channels.

    Why nearest rather than up or down: the widths stay as close as possible to the course's
    ``int(base * width)`` schedule, so rounded and exact runs prune about the same number of
    channels (the comparison measures the alignment, not a different budget). Because every
    round's target is a fraction of the ORIGINAL widths, rounding never compounds: a round
    whose target moves less than ``round_to`` may leave a layer as it was (the 128-wide layer
    loses ~6 channels per x0.95 round; at ``round_to`` 8 it goes 120, 112, 112, 104, 96), and a
    later round catches up. Rounding up would leave round 1 uncut (121 -> 128) and rounding down
    would prune more than asked.

    Args:
        count: channels the selection asks for (already at least ``floor``).
        current: the layer's current width (the upper bound: a cut cannot regrow channels).
        round_to: the multiple (1 returns ``count`` clipped to ``[floor, current]``).
        floor: the least the layer may keep (``min(min_channels, current)``).
    """
    if round_to < 1:
        raise ValueError(f"prune.round_to must be >= 1, got {round_to}")
    lo = -(-max(floor, round_to) // round_to) * round_to  # smallest allowed multiple
    hi = current // round_to * round_to  # largest multiple the layer still has
    if lo > hi:
        return current
    nearest = (count + round_to // 2) // round_to * round_to
    return min(max(nearest, lo), hi)


def select_channels(
    model: StudentNet,
    targets: Optional[Mapping[int, int]] = None,
    *,
    width: Optional[float] = None,
    base_widths: Optional[Sequence[int]] = None,
    mode: str = "layer",
    min_channels: int = 8,
    blocks: Sequence[int] = PRUNABLE_BLOCKS,
    round_to: int = 8,
) -> dict[int, torch.Tensor]:
    """Channels to keep, per prunable width index, as sorted LongTensors (original order).

    Give either ``targets`` ({width index: channels}) or ``width`` (then the targets are
    ``target_widths(base_widths, width, blocks)``). Every layer keeps at least
    ``min(min_channels, current width)`` and at most its current width.

    * layer: each layer's count is ``max(target, floor)``. A target above the layer's current
      width is an error (a cut cannot regrow channels), unless by less than ``round_to``: a parent
      rounded down by up to ``round_to - 1`` may sit just below the next round's target.
    * global: the budget is ``sum(targets)``, clipped to [sum of floors, sum of current widths].
      Each layer first gets its ``floor`` largest ``|gamma|``; the rest of the budget goes to the
      largest ``|gamma|`` among all remaining channels of all prunable layers. Without floors this
      is Liu et al.'s single global threshold; ties go to the lower (layer, channel).

    Then each layer's count is rounded by ``round_width`` (a multiple of ``round_to``) and the
    layer keeps that many of its largest ``|gamma|``. In global mode this is applied after the
    global selection, so the total only approximates the budget. ``round_to=1`` changes nothing.

    Args:
        model: the (possibly already pruned) student to cut.
        targets: channels to keep per width index; overrides ``width``/``blocks``.
        width: fraction of ``base_widths`` to keep (the course's cumulative ``width_mult``).
        base_widths: the unpruned widths; a pruned model must pass its original's. Defaults to
            the model's own widths.
        mode: "layer" or "global".
        min_channels: per-layer floor.
        blocks: prunable width indices (used with ``width``).
        round_to: every kept count is a multiple of this (see ``round_width``).
    """
    if (targets is None) == (width is None):
        raise ValueError("select_channels: give exactly one of targets or width")
    if mode not in MODES:
        raise ValueError(f"select_channels: mode must be one of {MODES}, got {mode!r}")
    current = widths_of(model)
    if targets is None:
        targets = target_widths(base_widths if base_widths is not None else current, width, blocks)
    _check_blocks(list(targets))
    if min_channels < 1:
        raise ValueError(f"select_channels: min_channels must be >= 1, got {min_channels}")
    if round_to < 1:
        raise ValueError(f"select_channels: round_to (prune.round_to) must be >= 1, got {round_to}")

    floors = {j: min(min_channels, current[j]) for j in targets}
    # stable sorts: equal |gamma| never make the choice depend on the sort implementation
    ranked = {j: torch.argsort(importance(model, j), descending=True, stable=True) for j in targets}

    if mode == "layer":
        counts = {}
        for j, k in targets.items():
            if k > current[j] + round_to - 1:
                raise ValueError(f"select_channels: width {j} has {current[j]} channels, cannot keep {k}")
            counts[j] = max(k, floors[j])
    else:
        budget = sum(targets.values())
        budget = max(sum(floors.values()), min(budget, sum(current[j] for j in targets)))
        # the pool: every channel not reserved by a floor, ranked together by |gamma|
        layer_ids = torch.cat([torch.full((current[j] - floors[j],), j) for j in targets])
        scores = torch.cat([importance(model, j)[ranked[j][floors[j]:]] for j in targets])
        order = torch.argsort(scores, descending=True, stable=True)[: budget - sum(floors.values())]
        # the stable sorts make each layer's share a prefix of its own ranking: only counts matter
        counts = {j: floors[j] + int((layer_ids[order] == j).sum()) for j in targets}
    counts = {j: round_width(n, current[j], round_to, floors[j]) for j, n in counts.items()}
    return {j: torch.sort(ranked[j][:n]).values.long() for j, n in counts.items()}


def _validate_keep(model: StudentNet, keep: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    _check_blocks(list(keep))
    current = widths_of(model)
    out = {}
    for j, idx in keep.items():
        idx = torch.as_tensor(idx, dtype=torch.long).cpu().flatten()
        uniq = torch.unique(idx)  # sorted
        if len(uniq) != len(idx) or len(idx) == 0 or idx.min() < 0 or idx.max() >= current[j]:
            raise ValueError(f"keep[{j}] must be distinct indices in 0..{current[j] - 1}, at least one")
        out[j] = uniq
    return out


@torch.no_grad()
def prune_student(model: StudentNet, keep: Mapping[int, torch.Tensor]) -> StudentNet:
    """A new, smaller dense StudentNet holding only the kept channels; ``model`` is unchanged.

    Args:
        model: the student to cut.
        keep: {width index: kept channel indices}, e.g. from ``select_channels``.
    """
    keep = _validate_keep(model, keep)
    widths = widths_of(model)
    for j, idx in keep.items():
        widths[j] = len(idx)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for j, idx in keep.items():
        idx = idx.to(state[f"cnn.{j}.3.weight"].device)
        for name in (f"cnn.{j}.3.weight", f"cnn.{j}.3.bias", f"cnn.{j + 1}.0.weight", f"cnn.{j + 1}.0.bias"):
            state[name] = state[name][idx]
        for stat in ("weight", "bias", "running_mean", "running_var"):
            state[f"cnn.{j + 1}.1.{stat}"] = state[f"cnn.{j + 1}.1.{stat}"][idx]
        # Conv2d(x, y, 1).weight is (y, x, 1, 1): the consumer's inputs are dim 1
        state[f"cnn.{j + 1}.3.weight"] = state[f"cnn.{j + 1}.3.weight"][:, idx]
    ref = next(model.parameters())
    new = StudentNet(widths=widths, num_classes=model.num_classes).to(device=ref.device, dtype=ref.dtype)
    new.load_state_dict(state, strict=True)
    return new.train(model.training)


@torch.no_grad()
def mask_student(model: StudentNet, keep: Mapping[int, torch.Tensor]) -> StudentNet:
    """A copy of ``model`` with the pruned channels silenced: the exactness reference for ``prune_student``.

    Why zeroing the BN's gamma AND beta is the same as removing the channel: the BN computes
    ``gamma * (x - mean) / sqrt(var + eps) + beta``, which is exactly 0 for any finite x when
    gamma = beta = 0 (in train and eval mode). ReLU6(0) = 0, so the consumer pointwise's column
    for that channel multiplies zeros and adds nothing. Upstream, the producer pointwise's row and
    the depthwise filter (groups = channels, so filter c reads only channel c) feed nothing but
    this BN entry. Hence the dense pruned net computes what this masked net computes, up to
    float rounding. (Zeroing gamma alone would leave the constant ReLU6(beta) flowing on: the
    original net is *not* the reference, and that gap is what fine-tuning recovers.)

    Args:
        model: the student (unchanged).
        keep: {width index: kept channel indices}.
    """
    keep = _validate_keep(model, keep)
    masked = copy.deepcopy(model)
    for j, idx in keep.items():
        bn = bn_of(masked, j)
        drop = torch.ones(bn.num_features, dtype=torch.bool, device=bn.weight.device)
        drop[idx.to(bn.weight.device)] = False
        bn.weight[drop] = 0.0
        bn.bias[drop] = 0.0
    return masked


def slim(
    model: StudentNet, width: float, cfg: PruneParams, base_widths: Optional[Sequence[int]] = None
) -> tuple[StudentNet, dict[int, torch.Tensor]]:
    """One pruning round's cut: choose channels by ``cfg`` and build the smaller net.

    Args:
        model: the parent student.
        width: target fraction of ``base_widths`` (cumulative, like the course's ``width_mult``).
        cfg: mode, floor, prunable blocks and rounding.
        base_widths: widths of the original unpruned student (defaults to the model's own).

    Returns:
        (pruned student, {width index: kept channel indices of the parent}).
    """
    keep = select_channels(
        model, width=width, base_widths=base_widths, mode=cfg.mode, min_channels=cfg.min_channels, blocks=cfg.blocks,
        round_to=cfg.round_to,
    )
    return prune_student(model, keep), keep


def bn_l1_hook(l1: float, blocks: Sequence[int] = PRUNABLE_BLOCKS) -> Optional[Callable[[nn.Module], None]]:
    """Network Slimming's sparsity term, as an ``after_backward(model)`` hook for the training loop.

    Adds ``l1 * sign(gamma)`` (the subgradient of ``l1 * sum|gamma|``) to the gradient of each
    prunable BN's weight, i.e. ``cnn.{j+1}.1`` for ``j`` in ``blocks``. Call it after
    ``loss.backward()`` (and after unscaling under AMP), before ``optimizer.step()``.

    Args:
        l1: penalty strength; 0 returns None (no hook, no cost).
        blocks: prunable width indices.
    """
    if l1 < 0:
        raise ValueError(f"slim.l1 must be >= 0, got {l1}")
    if l1 == 0:
        return None
    _check_blocks(blocks)
    blocks = tuple(blocks)

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for j in blocks:
            gamma = bn_of(model, j).weight
            if not gamma.requires_grad:
                continue  # frozen: nothing will step it
            penalty = l1 * torch.sign(gamma)
            if gamma.grad is None:  # e.g. the loss did not reach this BN this step
                gamma.grad = penalty
            else:
                gamma.grad.add_(penalty)

    return hook


def keep_as_lists(keep: Mapping[int, torch.Tensor]) -> dict[str, list[int]]:
    """``keep`` as plain JSON/checkpoint-friendly data (string keys, int lists)."""
    return {str(j): [int(c) for c in idx] for j, idx in sorted(keep.items())}
