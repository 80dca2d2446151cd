"""Network Slimming (Liu et al. 2017) for any conv-BN classifier, with physical removal of channels.

One mechanism for every arch, in three parts (Torch-Pruning's):

* *groups*: the coupled channel groups, found by tracing with Torch-Pruning's ``DependencyGraph``
  (``prunable_groups``). A group is named by the first layer, in module order, whose output
  channels it holds; every group but the classifier's output is prunable, with or without a BatchNorm (any
  ``_BatchNorm``, so SyncBatchNorm too). Which groups a round cuts is data per arch, in the model registry
  (``models.slimming_of``): StudentNet's are the course's ``cnn.{j}.3`` for ``j`` in ``prune.blocks``;
  every other arch's are all of them.
* *criterion*: how a group's channels are ranked, ``prune.criterion``, one entry of the ``criteria`` registry
  each (Torch-Pruning's ``tp.importance`` classes). The default, ``bn_scale``, is Network Slimming's: the mean
  ``|gamma|`` of the BatchNorms of its group (StudentNet's groups hold exactly one BN: its ``|gamma|``).
  A group without a BatchNorm (MobileNetV3's hidden ``Linear(576, 1024)``, squeeze-excitation's reduced
  channels) has no gamma: under ``bn_scale`` it is ranked by ``prune.bnless_criterion`` (l1 by default) and
  cut per layer to the round's width (``criterion_of``, ``slim``).
* *selection*: ``choose`` (per layer or global, with floors and ``round_to``), then one surgery per
  group (``prune_model``) that removes the channels from every coupled layer.

For StudentNet the traced groups are exactly the course's coupling. A prunable channel ``c`` of width index ``j`` (the output channels of pointwise ``cnn.j.3``) is
coupled across four places, as the course's table says:

* rows ``c`` of ``cnn.j.3.weight`` / ``cnn.j.3.bias`` (the pointwise that produces it),
* filter ``c`` of the depthwise ``cnn.{j+1}.0`` (weight and bias),
* entry ``c`` of the BatchNorm ``cnn.{j+1}.1`` (weight, bias, running_mean, running_var),
* input columns ``c`` of the pointwise ``cnn.{j+1}.3.weight``.

Its ``bn_scale`` importance is ``|gamma|`` of ``cnn.{j+1}.1.weight``. Cutting a channel removes it from all
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
  course's 121/243 ... 99/198, fall back to slower kernels that can make a pruned net slower than the
  unpruned one (docs/experiments/2026-11-25-aligned-widths-latency.md).

The L1 penalty on gammas that makes them sparse is ``bn_l1_hook``, plugged into
``train.train_one_epoch(after_backward=...)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import torch
from torch import nn

import torch_pruning as tp

from torch.nn.modules.batchnorm import _BatchNorm

from .config import PruneParams, RoundParams  # noqa: F401 (re-exported)
from .criteria import Sample, get_criterion, score_groups
from .models import PRUNABLE_BLOCKS, output_layer_name, slimming_of

K = TypeVar("K")

TRACE_SIZE = 32  # input side for tracing: channel coupling does not depend on it


@dataclass
class Group:
    """One coupled channel group of a traced net.

    Args:
        name: its first producing layer in module order (stable across pruning rounds), e.g. StudentNet's
            ``cnn.{j}.3``.
        channels: its current number of channels.
        root: the root layer; ``fn`` its out-channel pruning function (Torch-Pruning's).
        bns: ``(BatchNorm, its group channel for each BN channel)`` for every BN in the group (may be none).
        producers: ``(Conv2d or Linear, its group channel for each output channel, -1 if in another group)`` for
            every layer whose output channels the group holds (what ``mask_model`` silences without a BN).
        tp_group: Torch-Pruning's group holding all its channels (what a ``criteria`` importance scores).
    """

    name: str
    channels: int
    root: nn.Module
    fn: Callable
    bns: list[tuple[_BatchNorm, torch.Tensor]]
    producers: list[tuple[nn.Module, torch.Tensor]]
    tp_group: tp.dependency.Group


def _group_channels(item: Any, size: int) -> torch.Tensor:
    """The group channel of each of a layer's ``size`` channels in a traced group's ``item`` (-1: not in it)."""
    perm = torch.full((size,), -1, dtype=torch.long)
    perm[torch.as_tensor(item.idxs, dtype=torch.long)] = torch.as_tensor(item.root_idxs, dtype=torch.long)
    return perm


class Graph:
    """The traced coupling of ``model``'s channels (Torch-Pruning ``DependencyGraph``) and its prunable groups.

    Args:
        model: the net (traced in eval mode on a zero batch; its mode and BN statistics are left as they were).
            A SyncBatchNorm needs no process group in eval mode, so a converted net traces on the CPU.
        blocks: ``prune.blocks``, which the arch's registry entry maps to its prunable groups (StudentNet's
            course blocks; other archs: every group but the classifier's output). None: every group but the
            classifier's output, for any arch (what the surgery may cut).
    """

    def __init__(self, model: nn.Module, blocks: Optional[Sequence[int]] = PRUNABLE_BLOCKS) -> None:
        ref = next(model.parameters())
        was_training = model.training
        model.eval()  # a train-mode forward would move the BN running statistics
        try:
            with torch.enable_grad():  # Torch-Pruning traces the autograd graph
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=torch.zeros(1, 3, TRACE_SIZE, TRACE_SIZE, device=ref.device, dtype=ref.dtype))
        finally:
            model.train(was_training)
        self.model = model
        names = dict(self.dg._module2name)
        head = model.get_submodule(output_layer_name(model))
        rank = {name: i for i, (name, _) in enumerate(model.named_modules())}
        groups: dict[str, Group] = {}
        for g in self.dg.get_all_groups(ignored_layers=[head], root_module_types=(nn.Conv2d, nn.Linear)):
            root, fn = g[0].dep.target.module, g[0].dep.handler
            bns, producers = [], []
            for item in g:
                m = item.dep.target.module
                if isinstance(m, _BatchNorm):  # SyncBatchNorm too: DDP on CUDA converts every BN
                    bns.append((m, _group_channels(item, m.num_features)))
                    assert (bns[-1][1] >= 0).all(), f"{names[m]}: only part of its channels are in group {names[root]}"
                elif isinstance(m, (nn.Conv2d, nn.Linear)) and self.dg.is_out_channel_pruning_fn(item.dep.handler):
                    producers.append((m, _group_channels(item, m.weight.shape[0])))
            # named by its first producer in module order (tracing order is not stable to read)
            name = min((names[m] for m, _ in producers), key=rank.__getitem__)
            groups[name] = Group(name, len(g[0].idxs), root, fn, bns, producers, g)
        select = slimming_of(model).groups
        if blocks is not None and select is not None:  # data per arch, e.g. the course's blocks only
            wanted = select(blocks)
            missing = [w for w in wanted if w not in groups]
            assert not missing, f"tracing {type(model).__name__} did not find the groups {missing}"
            groups = {w: groups[w] for w in wanted}
        self.groups = groups

    def drop_group(self, name: str, keep: torch.Tensor):
        """Torch-Pruning's group that removes every channel of group ``name`` not in ``keep``."""
        g = self.groups[name]
        mask = torch.ones(g.channels, dtype=torch.bool)
        mask[keep] = False
        return self.dg.get_pruning_group(g.root, g.fn, mask.nonzero().flatten().tolist())


def prunable_groups(model: nn.Module, blocks: Optional[Sequence[int]] = PRUNABLE_BLOCKS) -> dict[str, int]:
    """{group name: channels} of the prunable groups of ``model`` (see ``Graph``)."""
    return {n: g.channels for n, g in Graph(model, blocks).groups.items()}


def criterion_of(group: Group, cfg: PruneParams) -> str:
    """The criterion that ranks ``group``'s channels: ``cfg.criterion``, or ``cfg.bnless_criterion`` for a group
    without a BatchNorm when ``cfg.criterion`` reads BatchNorms only (``bn_scale``).

    Such a group is then cut per layer to the round's width, in global mode too (``slim``). Why not rank it in the
    global pool: a weight norm and a gamma are different units, and any exchange rate between them (each group's
    scores over their mean, quantiles of the gammas) would be a made-up number deciding how much of the budget
    the head gets; and ``slim.l1`` makes only gammas sparse, so Network Slimming's premise, that a small score
    marks a channel training has already switched off, does not hold for these groups anyway. Per layer, a round
    of width w keeps w of each such group, as ``prune.mode: layer`` does, whatever the gammas say.
    """
    return cfg.bnless_criterion if not group.bns and get_criterion(cfg.criterion).bn_only else cfg.criterion


def sample_images(cfg: PruneParams) -> int:
    """Training images whose gradients the round's criteria read (0: none): what ``slim``'s ``sample`` needs."""
    main = get_criterion(cfg.criterion)
    used = [main] + ([get_criterion(cfg.bnless_criterion)] if main.bn_only else [])
    return max(c.sample_images for c in used)


def prunable_bns(model: nn.Module, blocks: Sequence[int] = PRUNABLE_BLOCKS) -> list[_BatchNorm]:
    """Every BatchNorm of a prunable group (each once): where ``slim.l1`` applies."""
    seen: dict[int, _BatchNorm] = {}
    for g in Graph(model, blocks).groups.values():
        for bn, _ in g.bns:
            seen.setdefault(id(bn), bn)
    return list(seen.values())


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


def choose(
    scores: Mapping[K, torch.Tensor],
    targets: Mapping[K, int],
    *,
    mode: str = "layer",
    min_channels: int = 8,
    round_to: int = 8,
) -> dict[K, torch.Tensor]:
    """Channels to keep per group, as sorted LongTensors (original order): the *selection* part.

    Every group keeps at least ``min(min_channels, its channels)`` and at most its channels.

    * layer: each group's count is ``max(target, floor)``. A target above the group's current
      width is an error (a cut cannot regrow channels), unless by less than ``round_to``: a parent
      rounded down by up to ``round_to - 1`` may sit just below the next round's target.
    * global: the budget is ``sum(targets)``, clipped to [sum of floors, sum of current widths].
      Each group first gets its ``floor`` best scores; the rest of the budget goes to the best scores
      among all remaining channels of all groups. Without floors this is Liu et al.'s single global
      threshold; ties go to the lower (group, channel).

    Then each count is rounded by ``round_width`` (a multiple of ``round_to``) and the group keeps that
    many of its best scores. In global mode this is applied after the global selection, so the total
    only approximates the budget. ``round_to=1`` changes nothing.

    Args:
        scores: per group, one importance per channel (``criteria.score_groups``).
        targets: channels to keep per group (a subset of ``scores``' keys).
        mode: "layer" or "global".
        min_channels: per-group floor.
        round_to: every kept count is a multiple of this (see ``round_width``).
    """
    current = {j: len(scores[j]) for j in targets}
    floors = {j: min(min_channels, current[j]) for j in targets}
    # stable sorts: equal scores never make the choice depend on the sort implementation
    ranked = {j: torch.argsort(scores[j], descending=True, stable=True) for j in targets}

    if mode == "layer":
        counts = {}
        for j, k in targets.items():
            if k > current[j] + round_to - 1:
                raise ValueError(f"group {j} has {current[j]} channels, cannot keep {k}")
            counts[j] = max(k, floors[j])
    else:
        keys = list(targets)
        budget = sum(targets.values())
        budget = max(sum(floors.values()), min(budget, sum(current[j] for j in keys)))
        # the pool: every channel not reserved by a floor, ranked together
        layer_ids = torch.cat([torch.full((current[j] - floors[j],), i) for i, j in enumerate(keys)])
        pool = torch.cat([scores[j][ranked[j][floors[j]:]] for j in keys])
        order = torch.argsort(pool, descending=True, stable=True)[: budget - sum(floors.values())]
        # the stable sorts make each group's share a prefix of its own ranking: only counts matter
        counts = {j: floors[j] + int((layer_ids[order] == i).sum()) for i, j in enumerate(keys)}
    counts = {j: round_width(n, current[j], round_to, floors[j]) for j, n in counts.items()}
    return {j: torch.sort(ranked[j][:n]).values.long() for j, n in counts.items()}


def _validate_keep(channels: Mapping[str, int], keep: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for j, idx in keep.items():
        if j not in channels:
            raise ValueError(f"keep: {j!r} is not a prunable group (known: {', '.join(channels)})")
        idx = torch.as_tensor(idx, dtype=torch.long).cpu().flatten()
        uniq = torch.unique(idx)  # sorted
        if len(uniq) != len(idx) or len(idx) == 0 or idx.min() < 0 or idx.max() >= channels[j]:
            raise ValueError(f"keep[{j}] must be distinct indices in 0..{channels[j] - 1}, at least one")
        out[j] = uniq
    return out


@torch.no_grad()
def prune_model(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> nn.Module:
    """A new, smaller dense copy of ``model`` holding only the kept channels; ``model`` is unchanged.

    The surgery is Torch-Pruning's: each group's dropped channels leave every coupled layer at once.
    Then the arch's registry entry rebuilds the net if it wants to (a StudentNet comes back as a clean
    ``StudentNet(widths=...)``, the course's state_dict format).

    Args:
        model: the net to cut.
        keep: {group name: kept channel indices}, e.g. from ``choose``; any group with a BN but the
            classifier's output may be cut.
    """
    new = copy.deepcopy(model)
    graph = Graph(new, blocks=None)
    keep = _validate_keep({n: g.channels for n, g in graph.groups.items()}, keep)
    for name, idx in keep.items():
        if len(idx) < graph.groups[name].channels:
            graph.drop_group(name, idx).prune()
    return slimming_of(model).rebuild(new).train(model.training)


@torch.no_grad()
def mask_model(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with the dropped channels silenced: the exactness reference for ``prune_model``.

    Every BatchNorm of a group gets gamma = beta = 0 on the dropped channels. Why that equals removing
    them: such a BN outputs exactly 0 for any finite input (train and eval mode); the activations
    used after BNs in the supported nets map 0 to 0 (ReLU, ReLU6, Hardswish, SiLU), so every consumer
    layer's input column for the channel multiplies zeros. Residual adds are safe because tracing couples
    the whole residual stream into one group: every BN feeding the add is zeroed, so the sum is 0.
    Squeeze-excitation is safe for the same reason: its pooled input of a silenced channel is 0, and
    its output scale multiplies that channel's zeros. (Zeroing gamma alone would leave ``act(beta)``
    flowing on: the original net is *not* the reference, and that gap is what fine-tuning recovers.)
    A group without a BatchNorm gets its producers' output rows (weight and bias) zeroed instead: the channel
    is 0 where it leaves them, and the same argument holds from there (MobileNetV3's head: hardswish, then
    dropout; squeeze-excitation: ReLU or SiLU before its second 1x1; StudentNet's last pointwise: the pool).
    A net whose group holds a channel that reaches a consumer through an activation with f(0) != 0 (e.g.
    sigmoid) would not be exact this way; none of the tested archs has one.

    Args:
        model: the net (unchanged).
        keep: {group name: kept channel indices}.
    """
    masked = copy.deepcopy(model)
    graph = Graph(masked, blocks=None)
    keep = _validate_keep({n: g.channels for n, g in graph.groups.items()}, keep)
    for name, idx in keep.items():
        g = graph.groups[name]
        for layer, perm in g.bns or g.producers:
            drop = ((perm >= 0) & ~torch.isin(perm, idx)).to(layer.weight.device)
            layer.weight[drop] = 0.0
            if layer.bias is not None:
                layer.bias[drop] = 0.0
    return masked


def slim(
    model: nn.Module, width: float, cfg: PruneParams, base_channels: Optional[Mapping[str, int]] = None, *,
    sample: Optional[Sample] = None, seed: int = 0,
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """One pruning round's cut on any arch: rank channels by ``cfg.criterion``, choose, build the smaller net.

    Groups ranked by ``cfg.bnless_criterion`` instead (``criterion_of``) are chosen per layer, whatever
    ``cfg.mode``; the others as ``cfg.mode`` says, the global budget being theirs alone.

    Args:
        model: the parent net (unchanged: a criterion that reads gradients puts them back).
        width: target fraction of ``base_channels`` per group (cumulative, like the course's ``width_mult``).
        cfg: criterion, mode, floor, StudentNet's prunable blocks and rounding.
        base_channels: {group name: channels} of the original unpruned net (defaults to the model's own).
        sample: training images and labels for a criterion that reads gradients (``data.train_sample``).
        seed: the run's seed, for a criterion that draws random numbers.

    Returns:
        (pruned net, {group name: kept channel indices of the parent}).
    """
    graph = Graph(model, cfg.blocks)
    base = dict(base_channels) if base_channels is not None else {n: g.channels for n, g in graph.groups.items()}
    missing = [n for n in graph.groups if n not in base]
    if missing:
        raise ValueError(f"base channels lack the groups {missing[:5]}: the parent was not pruned from this arch")
    keep: dict[str, torch.Tensor] = {}
    for criterion, mode in ((cfg.criterion, cfg.mode), (cfg.bnless_criterion, "layer")):
        groups = {n: g.tp_group for n, g in graph.groups.items() if n not in keep and criterion_of(g, cfg) == criterion}
        if groups:
            scores = score_groups(model, groups, criterion, sample=sample, seed=seed)
            keep.update(choose(scores, {n: int(base[n] * width) for n in scores}, mode=mode,
                               min_channels=cfg.min_channels, round_to=cfg.round_to))
    keep = {n: keep[n] for n in graph.groups}
    return prune_model(model, keep), keep


def base_channels_of(model: nn.Module, blocks: Sequence[int] = PRUNABLE_BLOCKS) -> dict[str, int]:
    """{group name: channels} of an unpruned net: what every round's ``width`` is a fraction of."""
    return prunable_groups(model, blocks)


def rebuild_kwargs(model: nn.Module, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``model_kwargs`` that rebuild a pruned net, as its registry entry says (plain data): StudentNet's
    ``widths``, or the parent's kwargs plus the channel ``structure``."""
    return slimming_of(model).rebuild_kwargs(model, kwargs)


def bn_l1_hook(l1: float, blocks: Sequence[int] = PRUNABLE_BLOCKS) -> Optional[Callable[[nn.Module], None]]:
    """Network Slimming's sparsity term, as an ``after_backward(model)`` hook for the training loop.

    Adds ``l1 * sign(gamma)`` (the subgradient of ``l1 * sum|gamma|``) to the gradient of every BatchNorm
    of a prunable group (``prunable_bns``: for StudentNet ``cnn.{j+1}.1`` for ``j`` in ``blocks``; for
    other archs every BN whose channels can be pruned; SyncBatchNorm as well). The groups are traced once
    per model, at the first call. Call it after ``loss.backward()`` (and after unscaling under AMP), before
    ``optimizer.step()``.

    Args:
        l1: penalty strength (``slim.l1``, >= 0 as ``SlimParams`` checks); 0 returns None (no hook, no cost).
        blocks: ``prune.blocks`` (StudentNet's prunable width indices, as ``PruneParams`` checks).
    """
    if l1 == 0:
        return None
    blocks = tuple(blocks)
    traced: dict[int, list[_BatchNorm]] = {}  # id(model) -> its prunable BNs

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        if id(model) not in traced:
            traced.clear()  # one model per training run; never keep a stale one alive
            traced[id(model)] = prunable_bns(model, blocks)
        for bn in traced[id(model)]:
            gamma = bn.weight
            if not gamma.requires_grad:
                continue  # frozen: nothing will step it
            penalty = l1 * torch.sign(gamma)
            if gamma.grad is None:  # e.g. the loss did not reach this BN this step
                gamma.grad = penalty
            else:
                gamma.grad.add_(penalty)

    return hook


def keep_as_lists(keep: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    """``keep`` as plain JSON/checkpoint-friendly data (string keys, int lists)."""
    return {str(j): [int(c) for c in idx] for j, idx in sorted(keep.items(), key=lambda kv: str(kv[0]))}
