"""The data half of a training epoch: a seeded batch order, this rank's part of each global batch, augmentation
and normalisation, as whole-batch tensor ops on the training device (``epoch_batches``). ``train.train_one_epoch``
feeds these batches to its step; the benchmark times them alone (``bench.datapath``).

On CUDA the step's random draws are made on the GPU: a training step makes no host-device sync of its own. On the
CPU the draws are those of the one CPU generator, in the same order as ever, so CPU results do not depend on this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .config import TrainParams
from .data import Split
from .distributed import SINGLE, Dist, shard


def augment(
    x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator, total: int | None = None, part: slice = slice(None),
    flipped: list | None = None,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per sample, on a uint8 or float batch.

    Args:
        x: the batch, or with ``total``, the ``part`` of a batch of ``total`` samples: the random draws
            are those of the whole batch (so every rank of a distributed run draws what one process would).
        gen: draws the crops and flips on its own device: a generator on ``x``'s GPU keeps the step free
            of host-device copies; a CPU one draws exactly what it always drew.
        flipped: when given, receives the boolean flip mask of ``x``, on ``x``'s device (for view-aware losses).
    """
    n, _, h, w = x.shape
    total = n if total is None else total
    on = gen.device
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (total, 1), generator=gen, device=on)[part]
        ox = torch.randint(0, 2 * padding + 1, (total, 1), generator=gen, device=on)[part]
        rows = (oy + torch.arange(h, device=on)).to(x.device)  # (n, h); .to is a no-op when gen is on x's device
        cols = (ox + torch.arange(w, device=on)).to(x.device)  # (n, w)
        b = torch.arange(n, device=x.device)[:, None, None]
        # advanced indexing gathers each sample's own window: result (n, h, w, c)
        x = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(total, generator=gen, device=on) < 0.5)[part].to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    else:
        mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    if flipped is not None:
        flipped.append(mask)
    return x.contiguous()


def batch_starts(n: int, batch_size: int, world: int = 1) -> list[int]:
    """Start of each training batch over ``n`` samples. A last batch of ONE sample joins the previous
    batch: BatchNorm cannot normalise a single sample whose features are 1x1 (ResNet18's last stage on
    small images), and one sample is too noisy a step anyway. A split smaller than a batch is one batch.
    With ``world`` processes the same holds per process: a last batch of fewer than ``2 * world``
    samples joins the previous one (so every rank gets at least two)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2 * world:
        starts.pop()
    return starts


def batch_on(data: Split, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's uint8 images and labels on ``device``, gathered where the split is (``.to`` is a no-op when
    ``fit`` put the split on the device); from pinned host memory (``device.placement``'s "batches") the copy is
    asynchronous."""
    x, y = data.images[idx], data.labels[idx]
    if device.type != "cpu" and data.images.is_pinned():
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


@dataclass
class Batch:
    """One step's data on this rank: normalised inputs and labels on the training device, the split indices and
    flip mask they came from (for view-aware losses), and the size of the global batch this part belongs to."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    flipped: torch.Tensor
    global_size: int


def epoch_batches(
    data: Split, norm: Callable[[torch.Tensor], torch.Tensor], cfg: TrainParams, gen: torch.Generator,
    device: torch.device = torch.device("cpu"), ctx: Dist = SINGLE,
) -> Iterator[Batch]:
    """The data half of a training epoch: a seeded order over ``data``, this rank's part of each global batch
    (``batch_starts``, ``distributed.shard``), augmented (``augment``) and normalised on ``device``.

    Lazy, one batch per step, so ``gen`` is drawn from in the same order as ever. ``data`` may be on ``device``
    already or on the host (each batch is then copied over: ``batch_on``), as ``device.place_splits`` decided.
    """
    n = len(data.labels)
    order = torch.randperm(n, generator=gen)
    aug_gen = gen
    if device.type != "cpu":
        # on a GPU the step's random draws are made there, seeded by one host draw per epoch (the same on
        # every rank): a draw made on the host and copied with .to(device) is a sync point every step
        aug_gen = torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        if data.images.device.type == device.type:
            order = order.to(device)  # one copy per epoch; each step's indices are slices of it
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    starts = batch_starts(n, cfg.batch_size, ctx.world)
    for k, start in enumerate(starts):
        glob = order[start : starts[k + 1] if k + 1 < len(starts) else n]
        part = shard(len(glob), ctx)
        idx = glob[part]
        flipped: list = []
        x, y = batch_on(data, idx, device)
        x = augment(x, cfg.crop_padding, cfg.flip, aug_gen, len(glob), part, flipped)
        yield Batch(norm(x).contiguous(memory_format=memory_format), y, idx, flipped[0], len(glob))
