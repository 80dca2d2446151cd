"""One training loop for every stage that trains: teacher, student, distill and pruning's fine-tuning.

The differences plug in: ``loss_fn(logits, labels, inputs)`` (distillation passes a KD loss that
runs the frozen teacher on the same augmented batch) and ``after_backward(model)`` (Network
Slimming's L1 on BatchNorm gammas). A loss with a ``prepare(train, norm, cfg, ctx)`` method is
"view-aware": ``fit`` calls ``prepare`` once, and each step passes ``views=(indices, flipped)`` too,
so it can look up what it precomputed (distillation's cached teacher logits). An epoch is its data half,
``batches.epoch_batches`` (the prepared uint8 tensors in a seeded order, augmented and normalised as whole-batch
tensor ops on the training device), fed to its step half, ``train_step``. On CUDA the splits are copied to the
GPU once when they take at most a third of its free memory (else they stay in pinned host memory and each batch is
copied: ``device.placement``), and a training step makes no host-device sync of its own (SyncBatchNorm and fp16's
GradScaler each make one per step, inside PyTorch). ``fit`` carries its state from epoch to epoch in one
``resume.TrainState``, the object a resume state saves and restores.

Several processes (``cfg.nproc`` > 1, started by torchrun: ``distributed.py``): every rank draws the
same global batch order and augmentation from the same seed and trains on its contiguous part of
each global batch, so the optimiser sees the gradient of the whole global batch and the schedule has
the step count of one process. BatchNorm: SyncBatchNorm on CUDA; on the CPU (where PyTorch has no
SyncBatchNorm) each rank normalises with its own part's statistics and DDP broadcasts rank 0's
running statistics at every forward, so all ranks hold the same buffers. Randomness inside the model
(dropout) is seeded per rank; the weights agree because DDP broadcasts rank 0's at the start.
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .batches import Batch, batch_starts, epoch_batches
from .config import TrainParams
from .data import Split, normalizer
from .device import amp_dtype, place_splits, select_device
from .distributed import SINGLE, Dist, all_sum, context, revert_sync_batchnorm, shard, sync_buffers
from .models import output_layer_name
from .resume import Resume, TrainState

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Hook = Callable[[nn.Module], None]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks for deterministic kernels. Otherwise cuDNN
    benchmarks its convolution algorithms once per shape and keeps the fastest: the shapes are fixed (one
    batch size, plus the last batch's), so that search is paid once. (No effect on the CPU.)"""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def seed_rank(seed: int, rank: int) -> None:
    """Give rank ``rank`` > 0 of a distributed run its own torch seed, for the randomness inside the model
    (dropout): ranks see different samples, and the same masks on each would correlate them. Rank 0 keeps
    its stream, the one a single process has, so one process and rank 0 draw alike. What must agree is
    agreed elsewhere: initial weights (DDP broadcasts rank 0's), batch order and augmentation (every rank
    draws the whole global batch from ``fit``'s own generator and takes its part)."""
    if rank > 0:
        torch.manual_seed(seed + 1_000_003 * rank)


def make_optimizer(model: nn.Module, cfg: TrainParams, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """AdamW or SGD over four groups: (backbone, output layer) x (weights, BatchNorm and biases).

    Args:
        backbone_lr_mult: the backbone's learning rate is ``cfg.lr`` times this, the output layer's ``cfg.lr``:
            fine-tuning pretrained features gently while a fresh head learns fast.
    """
    head = output_layer_name(model) + "." if backbone_lr_mult != 1 else None
    groups = []
    for is_head in (False, True):
        params = [p for n, p in model.named_parameters() if (head is not None and n.startswith(head)) == is_head]
        lr = cfg.lr * (1.0 if is_head else backbone_lr_mult)
        # no weight decay on BatchNorm and biases: decaying gammas would fight Network Slimming's ranking
        groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr": lr},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": lr}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"params.yaml: train.optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        # OneCycleLR needs >= 2 steps in each phase (it divides by the phase length): with a tiny
        # budget (few images, big batches) the warm-up takes at least 2 steps, and with < 4 steps
        # in all there is no cycle to run, so the rate stays constant at lr
        if total < 4:
            return None
        pct = min(0.5, max(0.25, 2.0 / total))
        # each group peaks at its own rate (the backbone's is lower when fine-tuning)
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=pct)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "constant":
        return None
    raise ValueError(f"params.yaml: train.schedule must be onecycle, cosine or constant, got {cfg.schedule!r}")


def train_step(
    model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, loss_fn: LossFn, *, scheduler=None,
    after_backward: Optional[Hook] = None, scaler: Optional[torch.amp.GradScaler] = None,
    dtype: torch.dtype | None = None, ctx: Dist = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step half of a training epoch: forward (under autocast in ``dtype``, if any), loss, backward,
    ``after_backward`` (with the inner module of a DDP wrapper), optimiser and scheduler steps; returns
    (this rank's mean loss, its logits)."""
    with torch.autocast(batch.x.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(batch.x)
        if hasattr(loss_fn, "prepare"):  # view-aware: looks up what it precomputed for these images
            loss = loss_fn(logits, batch.y, batch.x, views=(batch.idx, batch.flipped))
        else:
            loss = loss_fn(logits, batch.y, batch.x)
    # DDP averages gradients over ranks; weighting each rank's mean by its share of the global batch
    # makes that average the gradient of the global batch's mean loss even when the parts differ in size
    step_loss = loss * (len(batch.idx) * ctx.world / batch.global_size) if ctx.on else loss
    optimizer.zero_grad(set_to_none=True)
    inner = getattr(model, "module", model)
    if scaler is not None:
        scaler.scale(step_loss).backward()
        scaler.unscale_(optimizer)  # hooks see true gradients
        if after_backward is not None:
            after_backward(inner)
        scaler.step(optimizer)
        scaler.update()
    else:
        step_loss.backward()
        if after_backward is not None:
            after_backward(inner)
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss, logits


def train_one_epoch(
    model: nn.Module,
    data: Split,
    norm: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    cfg: TrainParams,
    gen: torch.Generator,
    *,
    loss_fn: LossFn,
    scheduler=None,
    after_backward: Optional[Hook] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    device: torch.device = torch.device("cpu"),
    desc: str = "train",
    ctx: Dist = SINGLE,
) -> tuple[float, float]:
    """One pass over ``data`` in a seeded random order (``epoch_batches``, then ``train_step`` per batch);
    returns (mean loss, accuracy) over the whole split.

    With ``ctx.world`` > 1, ``model`` is the DDP-wrapped network and this rank trains on its part of each
    global batch; ``after_backward`` then receives the inner module.
    """
    model.train()
    n = len(data.labels)
    total_loss = torch.zeros((), device=device)
    total_hit = torch.zeros((), device=device, dtype=torch.long)
    dtype = amp_dtype(device)
    steps = len(batch_starts(n, cfg.batch_size, ctx.world))
    for batch in tqdm(epoch_batches(data, norm, cfg, gen, device, ctx), total=steps, desc=desc, unit="batch",
                      leave=False, mininterval=1.0, disable=not ctx.is_writer):
        loss, logits = train_step(model, batch, optimizer, loss_fn, scheduler=scheduler, after_backward=after_backward,
                                  scaler=scaler, dtype=dtype, ctx=ctx)
        # accumulate on device: .item() here would be a sync point every step on a GPU
        total_loss += loss.detach().float() * len(batch.idx)
        total_hit += (logits.argmax(1) == batch.y).sum()
    loss_sum, hits = all_sum([total_loss.item(), float(total_hit.item())], ctx)
    return loss_sum / n, hits / n


@torch.no_grad()
def predict_logits(
    model: Callable[[torch.Tensor], Any], images: torch.Tensor, norm: Callable, batch_size: int = 512,
    device: torch.device = torch.device("cpu"), channels_last: bool = False,
) -> torch.Tensor:
    """Logits of ``model`` for uint8 images (on the CPU or on ``device``), returned on the CPU as fp32.

    Args:
        model: an ``nn.Module`` (put in eval mode here) or any callable from a normalised batch to logits,
            e.g. an ONNX Runtime session's wrapper (a NumPy result is turned into a tensor).

    In fp32, with no autocast even where training uses it: the accuracies the stages report are computed
    here, and must be those evaluate recomputes from the saved fp32 weights.
    """
    if isinstance(model, nn.Module):
        model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    for start in range(0, len(images), batch_size):
        x = norm(images[start : start + batch_size]).contiguous(memory_format=memory_format)  # norm moves it
        out.append(torch.as_tensor(model(x)).float())
    return torch.cat(out).cpu() if out else torch.empty(0)  # one copy back, not a sync per batch


def loss_and_accuracy(
    model: nn.Module, data: Split, norm: Callable, batch_size: int = 512, device: torch.device = torch.device("cpu"),
    ctx: Dist = SINGLE, channels_last: bool = False,
) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of ``model`` on a whole labelled split; with several ranks each
    predicts its part and the sums are added up, so every rank returns the figures of the full split."""
    part = shard(len(data.labels), ctx)
    logits = predict_logits(model, data.images[part], norm, batch_size, device, channels_last)
    labels = data.labels[part].long().cpu()
    n = len(data.labels)
    loss_sum = F.cross_entropy(logits, labels, reduction="sum").item() if len(labels) else 0.0
    loss_sum, hits = all_sum([loss_sum, float((logits.argmax(1) == labels).sum().item()) if len(labels) else 0.0], ctx)
    return loss_sum / n, hits / n


@dataclass
class FitResult:
    model: nn.Module  # holds the kept weights: the best on validation, or the last epoch's (TrainParams.keep)
    best_val_acc: float  # the kept epoch's validation accuracy, and its number
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def prepare_model(model: nn.Module, cfg: TrainParams, ctx: Dist) -> nn.Module:
    """Move ``model`` to the device in the configured memory format; with several ranks, wrap it in DDP
    (SyncBatchNorm first on CUDA). Returns the module to train (the DDP wrapper or ``model``)."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(ctx.device, memory_format=memory_format)
    if not ctx.on:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[ctx.device])
    # DDP broadcasts rank 0's parameters now, and its buffers (BatchNorm running stats) at every forward
    return DDP(model)


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """``fit``'s default ``loss_fn``: cross-entropy on the labels (with ``label_smoothing``)."""
    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, _inputs: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    return loss_fn


def new_state(model: nn.Module, train: Split, cfg: TrainParams, seed: int, backbone_lr_mult: float,
              ctx: Dist) -> TrainState:
    """A run's state before its first epoch: optimiser, schedule, GradScaler (fp16 only) and the generator
    of batch order and augmentation, seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, cfg, backbone_lr_mult)
    scheduler = make_scheduler(optimizer, cfg, len(batch_starts(len(train.labels), cfg.batch_size, ctx.world)))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype(ctx.device) == torch.float16 else None
    return TrainState(model, optimizer, scheduler, scaler, gen)


@contextlib.contextmanager
def live_log(live_dir: str | Path | None, done: int) -> Iterator[Any]:
    """dvclive's ``Live`` over ``live_dir`` (None: no logging), its curves continuing after ``done`` epochs
    (no repeated or restarted step after a resume); ended on the way out."""
    if live_dir is None:
        yield None
        return
    from dvclive import Live

    live = Live(str(live_dir), save_dvc_exp=False, report=None, dvcyaml=None, resume=done > 0)
    if done > 0:
        live.step = done
    try:
        yield live
    finally:
        live.end()


def end_epoch(state: TrainState, epoch: int, row: dict[str, float], live: Any, ctx: Dist, label: str,
              keep: str = "best") -> None:
    """Record epoch ``epoch``'s figures in ``state`` (history, the kept epoch) and in the logs.

    Args:
        row: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``.
        live: dvclive's ``Live`` (None: no logging).
        label: the line's first words, e.g. ``teacher epoch 2/4``.
        keep: ``best``: remember the best-on-validation weights; ``last``: every epoch is the kept one (its
            weights are the model's own at the end, so none are copied).
    """
    state.history.append(row)
    if ctx.is_writer:
        tqdm.write(f"{label}: train loss {row['train/loss']:.4f} acc {row['train/acc']:.4f}  "
                   f"val loss {row['val/loss']:.4f} acc {row['val/acc']:.4f}")
    if live is not None:
        for k, v in row.items():
            live.log_metric(k, v)
        live.next_step()
    if keep == "last":
        state.best_acc, state.best_epoch = row["val/acc"], epoch
    elif row["val/acc"] > state.best_acc:  # the same figures on every rank: they all keep the same epoch
        state.best_acc, state.best_epoch = row["val/acc"], epoch
        state.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in state.model.state_dict().items()})
    state.epoch = epoch


def fit(
    model: nn.Module, train: Split, val: Split, meta: dict[str, Any], cfg: TrainParams, *, seed: int,
    loss_fn: Optional[LossFn] = None, after_backward: Optional[Hook] = None, live_dir: str | Path | None = None,
    device: torch.device | None = None, desc: str = "train", ctx: Dist | None = None, backbone_lr_mult: float = 1.0,
    resume: Optional[Resume] = None,
) -> FitResult:
    """Train ``model`` for ``cfg.epochs``, keeping the best-on-validation weights (``cfg.keep``: ``last``, the
    last epoch's).

    Args:
        model: the network to train (modified in place; the best weights are loaded at the end).
        train, val: prepared splits (uint8 images).
        meta: prepared-data meta (for normalisation).
        cfg: optimiser, schedule, augmentation, epochs, device, memory format.
        seed: seeds batch order and augmentation (the same on every rank: each takes its part of the
            global batch's draws), and, on ranks > 0, the model's own randomness (``seed_rank``).
        loss_fn: ``loss_fn(logits, labels, inputs)``; ``cross_entropy(cfg.label_smoothing)`` by default.
        after_backward: called with the model after each ``backward()``, before the optimiser step.
        live_dir: where dvclive logs per-epoch metrics (None: no logging; only rank 0 logs).
        device: defaults to ``select_device(cfg.device)``.
        desc: the progress label (bars and per-epoch lines).
        ctx: the distributed context (``distributed.context``); default: join torchrun's group if any.
        backbone_lr_mult: learning rate of everything but the output layer, relative to ``cfg.lr``.
        resume: a ``resume.Resume``: start after its saved epoch if it has one for this run, and save one
            at the end of every epoch (None: neither).
    """
    ctx = ctx or context(device or select_device(cfg.device))
    net = prepare_model(model, cfg, ctx)
    model = getattr(net, "module", net)  # with SyncBatchNorm, a converted copy of the layers
    seed_rank(seed, ctx.rank)  # after DDP's broadcast of rank 0's weights: the model is the same everywhere
    train, val = place_splits((train, val), ctx.device, desc if ctx.is_writer else None)
    norm = normalizer(meta, ctx.device)
    loss_fn = loss_fn or cross_entropy(cfg.label_smoothing)
    if hasattr(loss_fn, "prepare"):
        loss_fn.prepare(train, norm, cfg, ctx)
    state = new_state(model, train, cfg, seed, backbone_lr_mult, ctx)
    saved = resume.load(ctx) if resume is not None else None
    if saved is not None:
        resume.restore(saved, state, ctx, live_dir if ctx.is_writer else None, cfg.epochs)
    t0 = time.perf_counter()
    with live_log(live_dir if ctx.is_writer else None, state.epoch) as live:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            tr_loss, tr_acc = train_one_epoch(
                net, train, norm, state.optimizer, cfg, state.gen, loss_fn=loss_fn, scheduler=state.scheduler,
                after_backward=after_backward, scaler=state.scaler, device=ctx.device,
                desc=f"{desc} {epoch}/{cfg.epochs}", ctx=ctx)
            sync_buffers(model, ctx)  # evaluate (and keep) exactly rank 0's model on every rank
            va_loss, va_acc = loss_and_accuracy(model, val, norm, cfg.eval_batch_size, ctx.device, ctx,
                                                cfg.channels_last)
            row = {"train/loss": tr_loss, "train/acc": tr_acc, "val/loss": va_loss, "val/acc": va_acc}
            end_epoch(state, epoch, row, live, ctx, f"{desc} epoch {epoch}/{cfg.epochs}", cfg.keep)
            if resume is not None:
                resume.save(state, ctx, live_dir)
    if state.best_epoch == 0:  # zero epochs: the model as given is the result
        state.best_acc = loss_and_accuracy(model, val, norm, cfg.eval_batch_size, ctx.device, ctx, cfg.channels_last)[1]
    elif state.best_state is not None:  # keep: last holds none: the model's own weights are the last epoch's
        model.load_state_dict(state.best_state)
    # a plain contiguous model on the CPU, whatever the training format: checkpoints and exports expect it
    model = revert_sync_batchnorm(model).cpu().to(memory_format=torch.contiguous_format).eval()
    return FitResult(model, state.best_acc, state.best_epoch, cfg.epochs, time.perf_counter() - t0, state.history)
