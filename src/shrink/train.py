"""One training loop for every stage that trains: teacher, student, distill and pruning's fine-tuning.

The differences plug in: ``loss_fn(logits, labels, inputs)`` (distillation passes a KD loss that
runs the frozen teacher on the same augmented batch) and ``after_backward(model)`` (Network
Slimming's L1 on BatchNorm gammas). Data are the prepared uint8 tensors; augmentation (random
crop with padding, horizontal flip) runs on whole batches as tensor ops.
"""
from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import TrainParams
from .data import Split, normalizer

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Hook = Callable[[nn.Module], None]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def select_device(name: str | None = None) -> torch.device:
    """``SHRINK_DEVICE`` or ``name`` if given, else CUDA when present, else the CPU."""
    name = name or os.environ.get("SHRINK_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def augment(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per sample, on a uint8 or float batch."""
    n, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=gen)
        ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=gen)
        rows = (oy + torch.arange(h)).to(x.device)  # (n, h)
        cols = (ox + torch.arange(w)).to(x.device)  # (n, w)
        b = torch.arange(n, device=x.device)[:, None, None]
        # advanced indexing gathers each sample's own window: result (n, h, w, c)
        x = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def make_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    # no weight decay on BatchNorm and biases: decaying gammas would fight Network Slimming's ranking
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"params.yaml: train.optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Start of each training batch over ``n`` samples. A last batch of ONE sample joins the previous
    batch: BatchNorm cannot normalise a single sample whose features are 1x1 (ResNet18's last stage on
    small images), and one sample is too noisy a step anyway. A split smaller than a batch is one batch."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
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
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=pct)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "constant":
        return None
    raise ValueError(f"params.yaml: train.schedule must be onecycle, cosine or constant, got {cfg.schedule!r}")


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
) -> tuple[float, float]:
    """One pass over ``data`` in a seeded random order; returns (mean loss, accuracy)."""
    model.train()
    n = len(data.labels)
    order = torch.randperm(n, generator=gen)
    total_loss = torch.zeros((), device=device)
    total_hit = torch.zeros((), device=device, dtype=torch.long)
    use_amp = device.type == "cuda"
    starts = batch_starts(n, cfg.batch_size)
    bar = tqdm(starts, desc=desc, unit="batch", leave=False, mininterval=1.0)
    for k, start in enumerate(bar):
        idx = order[start : starts[k + 1] if k + 1 < len(starts) else n]
        x = augment(data.images[idx], cfg.crop_padding, cfg.flip, gen)
        x = norm(x)
        y = data.labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits = model(x)
            loss = loss_fn(logits, y, x)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and use_amp:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # hooks see true gradients
            if after_backward is not None:
                after_backward(model)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if after_backward is not None:
                after_backward(model)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # accumulate on device: .item() here would be a sync point every step on a GPU
        total_loss += loss.detach() * len(idx)
        total_hit += (logits.argmax(1) == y).sum()
    return total_loss.item() / n, total_hit.item() / n


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, norm: Callable, batch_size: int = 512, device: torch.device = torch.device("cpu")
) -> torch.Tensor:
    """Logits of ``model`` (eval mode) for uint8 images, on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            out.append(model(norm(images[start : start + batch_size])).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate(
    model: nn.Module, data: Split, norm: Callable, batch_size: int = 512, device: torch.device = torch.device("cpu")
) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of ``model`` on a labelled split."""
    logits = predict_logits(model, data.images, norm, batch_size, device)
    labels = data.labels.long()
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


@dataclass
class FitResult:
    model: nn.Module  # holds the best-on-validation weights
    best_val_acc: float
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


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
) -> FitResult:
    """Train ``model`` for ``cfg.epochs``, keeping the best-on-validation weights.

    Args:
        model: the network to train (modified in place; the best weights are loaded at the end).
        train, val: prepared splits (uint8 images).
        meta: prepared-data meta (for normalisation).
        cfg: optimiser, schedule, augmentation and epochs.
        seed: seeds batch order and augmentation.
        loss_fn: ``loss_fn(logits, labels, inputs)``; cross-entropy (with label smoothing) by default.
        after_backward: called with the model after each ``backward()``, before the optimiser step.
        live_dir: where dvclive logs per-epoch metrics (None: no logging).
        device: defaults to ``select_device()``.
        desc: label of the progress bar.
    """
    device = device or select_device()
    model.to(device)
    norm = normalizer(meta, device)
    if loss_fn is None:
        def loss_fn(logits, labels, _inputs):
            return F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)

    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, cfg)
    steps = len(batch_starts(len(train.labels), cfg.batch_size))
    scheduler = make_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    live = None
    if live_dir is not None:
        from dvclive import Live

        live = Live(str(live_dir), save_dvc_exp=False, report=None, dvcyaml=None)
    best_acc, best_epoch, best_state = -1.0, 0, None
    history = []
    t0 = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            tr_loss, tr_acc = train_one_epoch(
                model, train, norm, optimizer, cfg, gen, loss_fn=loss_fn, scheduler=scheduler,
                after_backward=after_backward, scaler=scaler, device=device, desc=f"{desc} {epoch}/{cfg.epochs}",
            )
            va_loss, va_acc = evaluate(model, val, norm, cfg.eval_batch_size, device)
            row = {"train/loss": tr_loss, "train/acc": tr_acc, "val/loss": va_loss, "val/acc": va_acc}
            history.append(row)
            tqdm.write(f"{desc} epoch {epoch}/{cfg.epochs}: train loss {tr_loss:.4f} acc {tr_acc:.4f}  "
                       f"val loss {va_loss:.4f} acc {va_acc:.4f}")
            if live is not None:
                for k, v in row.items():
                    live.log_metric(k, v)
                live.next_step()
            if va_acc > best_acc:
                best_acc, best_epoch = va_acc, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    finally:
        if live is not None:
            live.end()
    if best_state is None:  # zero epochs: the model as given is the result
        best_acc = evaluate(model, val, norm, cfg.eval_batch_size, device)[1]
    else:
        model.load_state_dict(best_state)
    model.cpu().eval()
    return FitResult(model, best_acc, best_epoch, cfg.epochs, time.perf_counter() - t0, history)
