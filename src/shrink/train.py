"""One training loop for every stage that trains: teacher, student, distill and pruning's fine-tuning.

The differences plug in: ``loss_fn(logits, labels, inputs)`` (distillation passes a KD loss that
runs the frozen teacher on the same augmented batch) and ``after_backward(model)`` (Network
Slimming's L1 on BatchNorm gammas). A loss with a ``prepare(train, norm, cfg, ctx)`` method is
"view-aware": ``fit`` calls ``prepare`` once, and each step passes ``views=(indices, flipped)`` too,
so it can look up what it precomputed (distillation's cached teacher logits). Data are the prepared
uint8 tensors; augmentation (random crop with padding, horizontal flip) runs on whole batches as
tensor ops, on the training device. On CUDA the splits are copied to the GPU once when they take at most
a third of its free memory (else they stay in pinned host memory and each batch is copied: ``placement``) and the
step's random draws are made there: a training step makes no host-device sync of its own (SyncBatchNorm and
fp16's GradScaler each make one per step, inside PyTorch). On the CPU the draws are those of the one
CPU generator, in the same order as ever, so CPU results do not depend on this.

Several processes (``cfg.nproc`` > 1, started by torchrun: ``distributed.py``): every rank draws the
same global batch order and augmentation from the same seed and trains on its contiguous part of
each global batch, so the optimiser sees the gradient of the whole global batch and the schedule has
the step count of one process. BatchNorm: SyncBatchNorm on CUDA; on the CPU (where PyTorch has no
SyncBatchNorm) each rank normalises with its own part's statistics and DDP broadcasts rank 0's
running statistics at every forward, so all ranks hold the same buffers. Randomness inside the model
(dropout) is seeded per rank; the weights agree because DDP broadcasts rank 0's at the start.

Why one module of ~485 lines: the loop and the device decisions it depends on (autocast dtype, where the
splits live, seeding) are one piece; each decision is a plain function tested on the CPU (tests/test_device.py).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import TrainParams
from .data import Split, normalizer
from .distributed import SINGLE, Dist, all_sum, context, revert_sync_batchnorm, shard, sync_buffers

if TYPE_CHECKING:
    from .resume import Resume

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


def select_device(name: str | None = None) -> torch.device:
    """``SHRINK_DEVICE`` if set, else ``name`` unless it is ``auto``/None, else CUDA when present, else the CPU."""
    name = os.environ.get("SHRINK_DEVICE") or (name if name not in (None, "auto") else None)
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .config import ParamsError

        raise ParamsError(f"train.device: {name!r} asked for, but torch sees no CUDA device (use auto or cpu)")
    return torch.device(name)


def autocast_dtype(capability: tuple[int, int] | None) -> torch.dtype | None:
    """Autocast dtype for training on a GPU of CUDA compute ``capability`` (None: the CPU).

    bf16 where the GPU has bf16 hardware (8.0 and up: A100, RTX 30xx and later); fp16, with a GradScaler,
    below (T4 and RTX 20xx 7.5, V100 7.0): ``torch.cuda.is_bf16_supported()`` answers yes there too, by
    default, because PyTorch can *emulate* bf16, several times slower than fp16. None on the CPU: bf16 was
    measured 0.90x for StudentNet at 28 px on an AVX-512 CPU, and 0.03x for ResNet18 on an AVX2 one, which
    has no bf16 instructions (docs/faster-on-cpu.md).
    """
    if capability is None:
        return None
    return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training on ``device`` (``autocast_dtype`` of its compute capability)."""
    if device.type != "cuda":
        return None
    return autocast_dtype(torch.cuda.get_device_capability(device))


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


def make_optimizer(model: nn.Module, cfg: TrainParams, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """AdamW or SGD over four groups: (backbone, output layer) x (weights, BatchNorm and biases).

    Args:
        backbone_lr_mult: the backbone's learning rate is ``cfg.lr`` times this, the output layer's ``cfg.lr``:
            fine-tuning pretrained features gently while a fresh head learns fast.
    """
    from .models import output_layer_name

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


def batch_on(data: Split, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's uint8 images and labels on ``device``, gathered where the split is (``.to`` is a no-op when
    ``fit`` put the split on the device); from pinned host memory (``placement``'s "batches") the copy is
    asynchronous."""
    x, y = data.images[idx], data.labels[idx]
    if device.type != "cpu" and data.images.is_pinned():
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


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
    """One pass over ``data`` in a seeded random order; returns (mean loss, accuracy) over the whole split.

    With ``ctx.world`` > 1, ``model`` is the DDP-wrapped network and this rank trains on its part of each
    global batch; ``after_backward`` then receives the inner module. ``data`` may be on ``device`` already
    (``fit`` puts it on the GPU) or on the CPU (each batch is then copied over).
    """
    model.train()
    inner = getattr(model, "module", model)
    n = len(data.labels)
    order = torch.randperm(n, generator=gen)
    aug_gen = gen
    if device.type != "cpu":
        # on a GPU the step's random draws are made there, seeded by one host draw per epoch (the same on
        # every rank): a draw made on the host and copied with .to(device) is a sync point every step
        aug_gen = torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        if data.images.device.type == device.type:
            order = order.to(device)  # one copy per epoch; each step's indices are slices of it
    total_loss = torch.zeros((), device=device)
    total_hit = torch.zeros((), device=device, dtype=torch.long)
    dtype = amp_dtype(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    views_wanted = hasattr(loss_fn, "prepare")
    starts = batch_starts(n, cfg.batch_size, ctx.world)
    bar = tqdm(starts, desc=desc, unit="batch", leave=False, mininterval=1.0, disable=not ctx.is_writer)
    for k, start in enumerate(bar):
        glob = order[start : starts[k + 1] if k + 1 < len(starts) else n]
        part = shard(len(glob), ctx)
        idx = glob[part]
        flipped: list = []
        x, y = batch_on(data, idx, device)
        x = augment(x, cfg.crop_padding, cfg.flip, aug_gen, len(glob), part, flipped)
        x = norm(x).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
            loss = loss_fn(logits, y, x, views=(idx, flipped[0])) if views_wanted else loss_fn(logits, y, x)
        # DDP averages gradients over ranks; weighting each rank's mean by its share of the global batch
        # makes that average the gradient of the global batch's mean loss even when the parts differ in size
        step_loss = loss * (len(idx) * ctx.world / len(glob)) if ctx.on else loss
        optimizer.zero_grad(set_to_none=True)
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
        # accumulate on device: .item() here would be a sync point every step on a GPU
        total_loss += loss.detach().float() * len(idx)
        total_hit += (logits.argmax(1) == y).sum()
    loss_sum, hits = all_sum([total_loss.item(), float(total_hit.item())], ctx)
    return loss_sum / n, hits / n


@torch.no_grad()
def predict_logits(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, norm: Callable,
    batch_size: int = 512, device: torch.device = torch.device("cpu"), channels_last: bool = False,
) -> torch.Tensor:
    """Logits of ``model`` (a network, put in eval mode, or any runner such as a loaded ``runtime.Runtime``)
    for uint8 images (on the CPU or on ``device``), returned on the CPU.

    In fp32, with no autocast even where training uses it: the accuracies the stages report are computed
    here, and must be those evaluate recomputes from the saved fp32 weights.
    """
    if isinstance(model, nn.Module):
        model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    for start in range(0, len(images), batch_size):
        x = norm(images[start : start + batch_size]).contiguous(memory_format=memory_format)  # norm moves it
        out.append(model(x).float())
    return torch.cat(out).cpu() if out else torch.empty(0)  # one copy back, not a sync per batch


def evaluate(
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
    model: nn.Module  # holds the best-on-validation weights
    best_val_acc: float
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


SPLITS_SHARE = 1 / 3  # of the free GPU memory the splits may take; the rest: model, activations, optimiser, allocator


def placement(split_bytes: int, free_bytes: int, share: float = SPLITS_SHARE) -> str:
    """Where ``fit`` keeps the splits on a GPU: ``"device"`` (copied once; each step gathers its batch there)
    when they take at most ``share`` of the free memory, else ``"batches"`` (pinned host memory, each batch
    copied as it is needed). Food-11 at 224 px is ~1.7 GB of uint8: on a 4 GB GPU it would leave no room to train.

    Args:
        split_bytes: the splits' bytes (images and labels).
        free_bytes: the device's free memory (``torch.cuda.mem_get_info``).
        share: the most of ``free_bytes`` the splits may take.
    """
    return "device" if split_bytes <= free_bytes * share else "batches"


def place_splits(splits: tuple[Split, ...], device: torch.device, label: str | None) -> tuple[Split, ...]:
    """On CUDA, the splits moved where ``placement`` says, with one line ``<label>: data: ...`` saying which and
    why (none when ``label`` is None: ranks other than the writer); elsewhere the splits as they are."""
    if device.type != "cuda":
        return splits
    size = sum(s.images.nbytes + s.labels.nbytes for s in splits)
    free = torch.cuda.mem_get_info(device)[0]
    if placement(size, free) == "device":
        line = f"the splits ({size / 1e9:.2f} GB) are copied to {device} once ({free / 1e9:.2f} GB free there)"
        move = lambda t: t.to(device)  # noqa: E731
    else:
        line = (f"the splits ({size / 1e9:.2f} GB) stay in pinned host memory, each batch copied to {device}: "
                f"they would take over {SPLITS_SHARE:.0%} of its {free / 1e9:.2f} GB free")
        move = lambda t: t.pin_memory()  # noqa: E731
    if label is not None:
        tqdm.write(f"{label}: data: {line}")
    return tuple(dataclasses.replace(s, images=move(s.images), labels=move(s.labels)) for s in splits)


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    meta: dict[str, Any],
    cfg: TrainParams,
    *,
    seed: int,
    loss_fn: Optional[LossFn] = None,
    after_backward: Optional[Hook] = None,
    live_dir: str | Path | None = None,
    device: torch.device | None = None,
    desc: str = "train",
    ctx: Dist | None = None,
    backbone_lr_mult: float = 1.0,
    resume: Optional["Resume"] = None,
) -> FitResult:
    """Train ``model`` for ``cfg.epochs``, keeping the best-on-validation weights.

    Args:
        model: the network to train (modified in place; the best weights are loaded at the end).
        train, val: prepared splits (uint8 images).
        meta: prepared-data meta (for normalisation).
        cfg: optimiser, schedule, augmentation, epochs, device, memory format.
        seed: seeds batch order and augmentation (the same on every rank: each takes its part of the
            global batch's draws), and, on ranks > 0, the model's own randomness (see below).
        loss_fn: ``loss_fn(logits, labels, inputs)``; cross-entropy (with label smoothing) by default.
        after_backward: called with the model after each ``backward()``, before the optimiser step.
        live_dir: where dvclive logs per-epoch metrics (None: no logging; only rank 0 logs).
        device: defaults to ``select_device(cfg.device)``.
        desc: label of the progress bar.
        ctx: the distributed context (``distributed.context``); default: join torchrun's group if any.
        backbone_lr_mult: learning rate of everything but the output layer, relative to ``cfg.lr``.
        resume: a ``resume.Resume``: start after its saved epoch if it has one for this run, and save one
            at the end of every epoch (None: neither).
    """
    ctx = ctx or context(device or select_device(cfg.device))
    device = ctx.device
    net = prepare_model(model, cfg, ctx)
    model = getattr(net, "module", net)  # with SyncBatchNorm, a converted copy of the layers
    seed_rank(seed, ctx.rank)  # after DDP's broadcast of rank 0's weights: the model is the same everywhere
    train, val = place_splits((train, val), device, desc if ctx.is_writer else None)
    norm = normalizer(meta, device)
    if loss_fn is None:
        def loss_fn(logits, labels, _inputs):
            return F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    if hasattr(loss_fn, "prepare"):
        loss_fn.prepare(train, norm, cfg, ctx)

    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, cfg, backbone_lr_mult)
    steps = len(batch_starts(len(train.labels), cfg.batch_size, ctx.world))
    scheduler = make_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype(device) == torch.float16 else None  # fp16 only
    best_acc, best_epoch, best_state = -1.0, 0, None
    history, first = [], 1
    state = resume.load(ctx) if resume is not None else None
    if state is not None:
        first = resume.restore(state, model, optimizer, scheduler, scaler, gen, ctx,
                               live_dir if ctx.is_writer else None, cfg.epochs)
        best_acc, best_epoch, best_state, history = (state["best_acc"], state["best_epoch"], state["best_state"],
                                                     state["history"])
    live = None
    if live_dir is not None and ctx.is_writer:
        from dvclive import Live

        live = Live(str(live_dir), save_dvc_exp=False, report=None, dvcyaml=None, resume=first > 1)
        if first > 1:
            live.step = first - 1  # the curves continue: no repeated or restarted step
    t0 = time.perf_counter()
    try:
        for epoch in range(first, cfg.epochs + 1):
            tr_loss, tr_acc = train_one_epoch(
                net, train, norm, optimizer, cfg, gen, loss_fn=loss_fn, scheduler=scheduler,
                after_backward=after_backward, scaler=scaler, device=device, desc=f"{desc} {epoch}/{cfg.epochs}",
                ctx=ctx,
            )
            sync_buffers(model, ctx)  # evaluate (and keep) exactly rank 0's model on every rank
            va_loss, va_acc = evaluate(model, val, norm, cfg.eval_batch_size, device, ctx, cfg.channels_last)
            row = {"train/loss": tr_loss, "train/acc": tr_acc, "val/loss": va_loss, "val/acc": va_acc}
            history.append(row)
            if ctx.is_writer:
                tqdm.write(f"{desc} epoch {epoch}/{cfg.epochs}: train loss {tr_loss:.4f} acc {tr_acc:.4f}  "
                           f"val loss {va_loss:.4f} acc {va_acc:.4f}")
            if live is not None:
                for k, v in row.items():
                    live.log_metric(k, v)
                live.next_step()
            if va_acc > best_acc:  # the same figures on every rank: they all keep the same epoch
                best_acc, best_epoch = va_acc, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            if resume is not None:
                resume.save(epoch, model, optimizer, scheduler, scaler, gen, ctx, live_dir=live_dir,
                            best=(best_acc, best_epoch, best_state), history=history)
    finally:
        if live is not None:
            live.end()
    if best_state is None:  # zero epochs: the model as given is the result
        best_acc = evaluate(model, val, norm, cfg.eval_batch_size, device, ctx, cfg.channels_last)[1]
    else:
        model.load_state_dict(best_state)
    # a plain contiguous model on the CPU, whatever the training format: checkpoints and exports expect it
    model = revert_sync_batchnorm(model).cpu().to(memory_format=torch.contiguous_format).eval()
    return FitResult(model, best_acc, best_epoch, cfg.epochs, time.perf_counter() - t0, history)
