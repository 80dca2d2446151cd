"""One pruning round: cut the parent, measure the cut, fine-tune, save. The prune stage and the sweep run it.

``stages/prune.py`` runs one round of ``prune.rounds`` per DVC stage; ``scripts/prune_sweep.py`` runs a chain of
rounds in one process to measure a schedule or a criterion. Both call ``run_round``, so a sweep's figures are
the ones the pipeline makes with the same params (and, on the CPU, the same number of torch threads).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import PruneParams, SlimParams
from .data import load_meta, load_split, normalizer, train_sample
from .distill import make_kd_loss
from .pipeline import Outputs, TrainJob, as_params, run_training
from .prune import base_channels_of, bn_l1_hook, keep_as_lists, rebuild_kwargs, sample_images, slim
from .train import loss_and_accuracy, seed_everything


def run_round(
    parent: str | Path,
    cfg: PruneParams,
    name: str,
    *,
    slim_params: SlimParams,
    seed: int,
    data_dir: str | Path,
    teacher: str | Path,
    out: str | Path,
    metrics_path: str | Path,
    live_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Round ``name``: cut ``parent`` to the round's width by ``cfg.criterion``, measure validation accuracy
    right after the cut, fine-tune, and write checkpoint and figures as every training stage does
    (``pipeline.run_training``). Returns the figures (its metrics, with ``width``, ``channels`` and
    ``val_acc_after_cut``).

    Args:
        parent: checkpoint to cut; a pruned one carries the unpruned net's channels (``base_channels``), which
            the round's width is a fraction of.
        cfg: the prune section; ``cfg.rounds[name]`` gives the width and epochs. The checkpoint records it with
            this round alone (``PruneParams.only``).
        name: the round's name.
        slim_params: the ``slim`` section (its ``l1`` applies during fine-tuning).
        seed: the run seed: seeds training, and the cut's sample of training images and random criterion.
        data_dir: prepared data folder.
        teacher: teacher checkpoint, read only when fine-tuning with KD (``prune.finetune.distill``).
        out, metrics_path, live_dir: where ``run_training`` writes.
    """
    cfg, rnd, ft = cfg.only(name), cfg.rounds[name], cfg.finetune
    seed_everything(seed)
    ckpt = load_checkpoint(parent)
    model = model_from_checkpoint(ckpt)
    base_channels = ckpt.get("base_channels") or base_channels_of(model, cfg.blocks)  # the unpruned net's
    images = sample_images(cfg)
    sample = train_sample(data_dir, images, seed) if images else None  # its own generator: training's is untouched
    model, keep = slim(model, rnd.width, cfg, base_channels, sample=sample, seed=seed)
    _, cut_acc = loss_and_accuracy(model, load_split(data_dir, "val"), normalizer(load_meta(data_dir)))
    job = TrainJob(
        model, ckpt["model"], rebuild_kwargs(model, ckpt["model_kwargs"]),
        dataclasses.replace(ft.train, epochs=rnd.epochs), seed, as_params(seed=seed, prune=cfg, slim=slim_params),
        loss_fn=make_kd_loss(model_from_checkpoint(teacher), ft.temperature, ft.alpha) if ft.distill else None,
        after_backward=bn_l1_hook(slim_params.l1, cfg.blocks))
    return run_training(
        job, f"prune@{name}", data_dir, Outputs(Path(out), Path(metrics_path), Path(live_dir) if live_dir else None),
        extra_metrics={"width": rnd.width, "channels": {n: len(k) for n, k in keep.items()},
                       "val_acc_after_cut": round(cut_acc, 6)},
        extra_ckpt={"base_channels": dict(base_channels), "kept_channels": keep_as_lists(keep)})
