"""Knowledge distillation loss (Hinton et al. 2015), as the course wrote it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def make_kd_loss(teacher: nn.Module, temperature: float, alpha: float):
    """A ``loss_fn(logits, labels, inputs)`` for ``train.fit`` that runs the frozen teacher on the same batch."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(inputs).float()
        return kd_loss(logits.float(), teacher_logits, labels, temperature, alpha)

    return loss_fn
