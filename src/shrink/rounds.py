"""One pruning round: cut the parent, measure the cut, fine-tune, save. The prune stage and the sweep run it.

``stages/prune.py`` runs one round of ``prune.rounds`` per DVC stage; ``scripts/prune_sweep.py`` runs a chain of
rounds in one process to measure a schedule or a criterion. Both call ``run_round``, so a sweep's figures are
the ones the pipeline makes with the same params (and, on the CPU, the same number of torch threads).

``stages/control.py`` runs it too, as the round named ``control`` (``config.CONTROL``): the equal-budget control,
``prune.control.parent`` fine-tuned with exactly a round's recipe (``prune.finetune``: loss, schedule, ``slim.l1``
hook, seed) for ``prune.control.epochs``, and no cut. A round and the control then differ by the cut alone.

Every fine-tune here lets its BatchNorm statistics follow at PyTorch's default pace at least (``follow_the_cut``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import AUTO, CONTROL, PruneParams, SlimParams
from .data import load_meta, load_split, normalizer, train_sample
from .distill import load_teacher, make_kd_loss
from .pipeline import Outputs, TrainJob, as_params, run_training
from .prune import base_channels_of, bn_l1_hook, keep_as_lists, rebuild_kwargs, sample_images, slim
from .train import loss_and_accuracy, seed_everything


FINETUNE_BN_MOMENTUM = 0.1  # PyTorch's default


def follow_the_cut(model: nn.Module, momentum: float = FINETUNE_BN_MOMENTUM) -> nn.Module:
    """Give each BatchNorm whose running statistics follow slower than ``momentum`` that momentum, for a fine-tune.

    torchvision's MobileNetV3 and EfficientNet build theirs with 0.01 (TensorFlow's decay 0.99, for ImageNet-length
    runs). A cut changes the input of every later layer, and the screen's single epoch (a few hundred steps) then
    ends with statistics of the uncut net: on mobilenet_v3_small (half the default data) a cut to 0.18 read 0.11
    validation accuracy after its epoch, 0.67 with 0.1, whose weights are the same (the momentum moves the running
    statistics alone; docs/experiments/2026-12-06-knee-search.md). StudentNet's have 0.1: nothing changes.
    ``None`` (a cumulative average) is left alone. The checkpoint keeps no momentum: a rebuilt net has its own."""
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.momentum is not None and m.momentum < momentum:
            m.momentum = momentum
    return model


# what each kind of stage reads of the prune section (its params: in dvc.yaml), so its checkpoint records that alone
CONTROL_READS = ("blocks", "finetune", "control")
ROUND_SKIPS = ("control", "scratch")  # of the prune section, what a round's stage does not read


def recorded(cfg: PruneParams, control: bool) -> dict[str, Any]:
    """The prune section as a round's (all but ``ROUND_SKIPS``) or the control's (``CONTROL_READS``) checkpoint
    records it: what its stage reads."""
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if (k in CONTROL_READS if control else k not in ROUND_SKIPS)}


def run_round(parent: str | Path, cfg: PruneParams, name: str, *, slim_params: SlimParams, seed: int,
              data_dir: str | Path, teacher: str | Path, out: str | Path, metrics_path: str | Path,
              live_dir: str | Path | None = None, stage: str | None = None) -> dict[str, Any]:
    """Round ``name``: cut ``parent`` to the round's width by ``cfg.criterion``, measure validation accuracy
    right after the cut, fine-tune, and write checkpoint and figures as every training stage does
    (``pipeline.run_training``). Returns the figures (its metrics, with ``width``, ``channels`` and
    ``val_acc_after_cut``). ``name`` ``CONTROL``: the control, fine-tuned for ``cfg.control.epochs`` with no cut
    (its figures carry ``width`` 1.0 alone).

    Args:
        parent: checkpoint to cut; a pruned one carries the unpruned net's channels (``base_channels``), which
            the round's width is a fraction of.
        cfg: the prune section; ``cfg.rounds[name]`` gives the width and epochs (``cfg.control`` the control's
            epochs). The checkpoint records it with this round alone (``PruneParams.only``).
        name: the round's name, or ``CONTROL``.
        slim_params: the ``slim`` section (its ``l1`` applies during fine-tuning).
        seed: the run seed: seeds training, and the cut's sample of training images and random criterion.
        data_dir: prepared data folder.
        teacher: teacher checkpoint, read only when fine-tuning with KD (``prune.finetune.distill``).
        out, metrics_path, live_dir: where ``run_training`` writes.
        stage: its progress bar's and resume state's name (default ``prune@<name>``, ``control``).
    """
    control = name == CONTROL
    ft = cfg.finetune
    epochs = cfg.control.epochs if control else cfg.rounds[name].epochs
    cfg = cfg.only(name)
    seed_everything(seed)
    ckpt = load_checkpoint(parent)
    model = follow_the_cut(model_from_checkpoint(ckpt))
    extra_metrics: dict[str, Any] = {"width": 1.0}
    extra_ckpt = None
    if not control:  # the cut; the control keeps every channel
        if (width := cfg.rounds[name].width) == AUTO:
            raise ValueError(f"prune.rounds.{name}.width: auto, not a width: resolve it from its plan first")
        base_channels = ckpt.get("base_channels") or base_channels_of(model, cfg.blocks)  # the unpruned net's
        images = sample_images(cfg)
        sample = train_sample(data_dir, images, seed) if images else None  # own generator: training's is untouched
        model, keep = slim(model, width, cfg, base_channels, sample=sample, seed=seed)
        _, cut_acc = loss_and_accuracy(model, load_split(data_dir, "val"), normalizer(load_meta(data_dir)))
        extra_metrics = {"width": width, "channels": {n: len(k) for n, k in keep.items()},
                         "val_acc_after_cut": round(cut_acc, 6)}
        extra_ckpt = {"base_channels": dict(base_channels), "kept_channels": keep_as_lists(keep)}
    job = TrainJob(
        model, ckpt["model"], rebuild_kwargs(model, ckpt["model_kwargs"]) if not control else ckpt["model_kwargs"],
        dataclasses.replace(ft.train, epochs=epochs), seed, as_params(seed=seed, prune=recorded(cfg, control),
                                                                      slim=slim_params),
        loss_fn=make_kd_loss(load_teacher(teacher, load_meta(data_dir)["classes"]), ft.temperature, ft.alpha)
        if ft.distill else None,
        after_backward=bn_l1_hook(slim_params.l1, cfg.blocks))
    return run_training(
        job, stage or (name if control else f"prune@{name}"), data_dir,
        Outputs(Path(out), Path(metrics_path), Path(live_dir) if live_dir else None),
        extra_metrics=extra_metrics, extra_ckpt=extra_ckpt)
