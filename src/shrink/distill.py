"""Knowledge distillation (Hinton et al. 2015): the loss as the course wrote it, and distill's recipe as a training job."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import check_classes, load_checkpoint, model_from_checkpoint
from .config import Params, TrainParams
from .distributed import shard
from .pipeline import TrainJob
from .prune import bn_l1_hook
from .train import predict_logits


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """``alpha*T^2*KL(softmax(teacher/T) || softmax(student/T)) + (1-alpha)*CE(student, labels)``.

    The student side enters ``kl_div`` in log-space (log_softmax) and the KL is averaged per
    sample (``batchmean``), which is the true KL divergence; T^2 keeps the soft-target gradients
    on the same scale as the hard-label ones when T changes.

    Args:
        student_logits: (N, C) raw student outputs.
        teacher_logits: (N, C) raw teacher outputs (no gradient needed).
        labels: (N,) class indices.
        temperature: softening temperature T.
        alpha: weight of the soft (teacher) term.
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean", log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


class KDLoss:
    """``loss_fn(logits, labels, inputs, views=None)`` for ``train.fit``: KD against the frozen teacher.

    When the training views repeat exactly (no random crop: each image is seen as itself or its mirror
    image), ``prepare`` runs the teacher ONCE over every view of the training split and each step looks
    its logits up instead of running the teacher again: the teacher's forward pass cost as much as the
    whole student step (measured: a distill step was 2.07x a plain one), and over E epochs it ran E
    times per image. The teacher is in eval mode, so a cached logit is what a fresh forward would give
    (up to float rounding of a different batch). With random crops there is no cache: the teacher runs
    on each augmented batch.
    """

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float, cache: bool = True) -> None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher, self.temperature, self.alpha = teacher, temperature, alpha
        self.use_cache = cache
        self.table: torch.Tensor | None = None  # (N, views, C) teacher logits, or None

    def prepare(self, train, norm, cfg, ctx) -> None:
        """Called once by ``train.fit``: the teacher follows the student's device and memory format, and
        with ``cfg.crop_padding == 0`` the logits of every view are computed (each rank computes its part
        and the parts are summed into every rank's full table)."""
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.teacher.to(ctx.device, memory_format=memory_format)
        self.table = None
        if not self.use_cache or cfg.crop_padding > 0:
            return
        n = len(train.labels)
        part = shard(n, ctx)
        images = train.images[part]
        norms = [norm] + ([lambda x: norm(x).flip(3)] if cfg.flip else [])  # the mirror view, batch by batch
        local = torch.stack([predict_logits(self.teacher, images, f, cfg.eval_batch_size, ctx.device, cfg.channels_last)
                             for f in norms], 1)
        table = torch.zeros(n, len(norms), local.shape[-1])
        table[part] = local
        if ctx.on:
            import torch.distributed as dist

            table = table.to(ctx.device)
            dist.all_reduce(table)  # every other rank contributes zeros outside its part
        self.table = table.to(ctx.device)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor, views=None) -> torch.Tensor:
        if self.table is not None and views is not None:
            idx, flipped = views  # on the training device already when fit put the split there: no copy
            teacher_logits = self.table[idx.to(self.table.device), flipped.long().to(self.table.device)]
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(inputs).float()
        return kd_loss(logits.float(), teacher_logits, labels, self.temperature, self.alpha)


def make_kd_loss(teacher: nn.Module, temperature: float, alpha: float, cache: bool = True) -> KDLoss:
    """A ``loss_fn`` for ``train.fit`` that distils from the frozen ``teacher`` (see ``KDLoss``)."""
    return KDLoss(teacher, temperature, alpha, cache)


def load_teacher(path: str | Path, classes: list[str]) -> nn.Module:
    """The teacher checkpoint at ``path`` as a model, checked to know ``classes`` (the prepared data's).

    Building it draws the net's initial weights from the global RNG before loading its own: stages call this where
    they always did, so the student's seeded initialisation stays what it was.
    """
    ckpt = load_checkpoint(path)
    check_classes(ckpt, classes, path)
    return model_from_checkpoint(ckpt)  # KDLoss.prepare moves it to the training device


def distill_job(model: nn.Module, name: str, model_kwargs: dict, cfg: TrainParams, seed: int, resolved: dict,
                teacher: nn.Module, params: Params) -> TrainJob:
    """distill's recipe as a ``pipeline.TrainJob``: KD from the frozen ``teacher`` with ``params.distill``'s
    temperature and alpha, and slimming's L1 on the BatchNorm gammas (``params.slim.l1``). Used by the distill stage
    and by scratch@<round> (the same recipe on a round's architecture)."""
    p = params.distill
    return TrainJob(model, name, model_kwargs, cfg, seed, resolved,
                    loss_fn=make_kd_loss(teacher, p.temperature, p.alpha), after_backward=bn_l1_hook(params.slim.l1))
