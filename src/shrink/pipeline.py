"""What every training stage does around ``train.fit``: load data, train, test, save, report.

Stages in ``stages/`` stay a screenful: ``shrink.stage`` hands them their params, they build the model
and the loss into a ``TrainJob``, and call ``run_training`` with their ``Outputs``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from torch import nn

from . import resume as resume_state
from .checkpoint import save_checkpoint, state_dict_bytes
from .config import TrainParams
from .data import data_meta, load_meta, load_split, normalizer
from .device import select_device
from .distributed import context, finish, write_rank_hash
from .io import write_json, write_text
from .models import count_params
from .train import FitResult, Hook, LossFn, fit, loss_and_accuracy


def model_summary(model: nn.Module, image_size: int):
    """torchinfo's summary of one image through ``model`` on the CPU (its text and ``total_mult_adds``)."""
    from torchinfo import summary

    return summary(model, input_size=(1, 3, image_size, image_size), verbose=0, device="cpu",
                   col_names=("output_size", "num_params"))


# The few figures `dvc metrics diff` / `dvc exp show` compare (8 training stages x 3 columns): the loss moves
# with any retraining even when the accuracy of a small test split does not. Everything else a stage measured
# (validation figures, bytes, epochs, timing, setup) goes to ``<out stem>.run.json``, a plain output.
HEADLINE = ("test_acc", "test_loss", "macs")


def as_params(**sections: Any) -> dict[str, Any]:
    """Resolved params for a checkpoint: dataclasses become dicts."""
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in sections.items()}


def log_live_params(live_dir: str | Path, resolved: dict[str, Any]) -> None:
    """Add the params that made a model to its dvclive folder (``<live_dir>/params.yaml``, dvclive's
    ``log_params``), so the curves carry them. Reopened with ``resume=True`` after training: the curves and
    ``metrics.json`` already there stay byte for byte as training wrote them."""
    from dvclive import Live

    live = Live(str(live_dir), resume=True, save_dvc_exp=False, report=None, dvcyaml=None)
    live.log_params(json.loads(json.dumps(resolved)))  # plain types only (tuples become lists)
    live.end()


@dataclass
class TrainJob:
    """What to train and how.

    Args:
        model: the network to train.
        name, model_kwargs: its registry name and constructor arguments, saved to rebuild it.
        cfg: training params.
        seed: the run's seed.
        resolved: the params sections that made this model (saved in the checkpoint and the dvclive folder).
        loss_fn, after_backward: plug-ins of ``train.fit`` (None: cross-entropy; no hook).
        backbone_lr_mult: see ``train.make_optimizer``.
    """

    model: nn.Module
    name: str
    model_kwargs: dict[str, Any]
    cfg: TrainParams
    seed: int
    resolved: dict[str, Any]
    loss_fn: Optional[LossFn] = None
    after_backward: Optional[Hook] = None
    backbone_lr_mult: float = 1.0


@dataclass(frozen=True)
class Outputs:
    """Where a training stage writes (paths from dvc.yaml).

    Args:
        checkpoint: the ``.pt`` file; ``<stem>.summary.txt`` (torchinfo) and ``<stem>.run.json`` (every figure
            of the run) go beside it.
        metrics: the ``HEADLINE`` figures' JSON.
        live: the dvclive folder (None: no curves).
    """

    checkpoint: Path
    metrics: Path
    live: Optional[Path] = None

    def __post_init__(self) -> None:
        for name in ("checkpoint", "metrics", "live"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    @property
    def summary(self) -> Path:
        return self.checkpoint.with_suffix(".summary.txt")

    @property
    def run(self) -> Path:
        return self.checkpoint.with_suffix(".run.json")


def run_training(job: TrainJob, stage: str, data_dir: str | Path, outputs: Outputs, *,
                 extra_metrics: Optional[dict[str, Any]] = None, extra_ckpt: Optional[dict[str, Any]] = None,
                 ) -> dict[str, Any]:
    """Train, evaluate on test, write checkpoint + summary + metrics; returns the metrics.

    Under torchrun (``cfg.nproc`` > 1) every rank trains and evaluates its part, and only rank 0
    writes; the other ranks return the same metrics without writing anything.

    Args:
        job: what to train and how.
        stage: the stage's name in dvc.yaml (``teacher``, ``prune@prune_1``): the key of its resume state
            (docs/resume.md) and, with ``@`` as a space, the progress label (``prune prune_1``).
        data_dir: prepared data folder.
        outputs: where the checkpoint, summary, run figures, metrics and curves go.
        extra_metrics, extra_ckpt: stage-specific additions to ``<stem>.run.json`` and to the checkpoint.
    """
    t0 = time.perf_counter()
    meta = load_meta(data_dir)
    train, val, test = (load_split(data_dir, s) for s in ("train", "val", "test"))
    ctx = context(select_device(job.cfg.device))
    # a killed run left its last epoch here (docs/resume.md); keyed by everything the result depends on
    resume = resume_state.for_stage(stage, {"resolved": job.resolved, "train": dataclasses.asdict(job.cfg),
                                            "seed": job.seed},
                                    (outputs.checkpoint, outputs.summary, outputs.metrics, outputs.live), ctx)
    label = stage.replace("@", " ")
    result = fit(job.model, train, val, meta, job.cfg, seed=job.seed, loss_fn=job.loss_fn,
                 after_backward=job.after_backward, live_dir=outputs.live, desc=label, ctx=ctx,
                 backbone_lr_mult=job.backbone_lr_mult, resume=resume)
    model = result.model.to(ctx.device)
    test_loss, test_acc = loss_and_accuracy(model, test, normalizer(meta, ctx.device), job.cfg.eval_batch_size,
                                            ctx.device, ctx)
    model.cpu()
    write_rank_hash(model, ctx)
    if not ctx.is_writer:
        finish(ctx)
        return {"val_acc": round(result.best_val_acc, 6), "test_acc": round(test_acc, 6)}
    save_checkpoint(outputs.checkpoint, model, name=job.name, model_kwargs=job.model_kwargs,
                    num_classes=len(meta["classes"]), data_meta=data_meta(meta), params=job.resolved, extra=extra_ckpt)
    metrics = write_reports(result, (test_loss, test_acc), meta["image_size"], outputs, ctx.world, extra_metrics, t0)
    if outputs.live is not None:
        log_live_params(outputs.live, job.resolved)
    if resume is not None:
        resume.clear()  # complete: the outputs are written, nothing to resume
    finish(ctx)  # the other ranks wait here until every output is written
    print(f"{label}: val acc {metrics['val_acc']:.4f}  test acc {metrics['test_acc']:.4f}  "
          f"params {metrics['params']:,}  fp32 {metrics['fp32_bytes']:,} B  {metrics['wall_seconds']} s")
    return metrics


def write_reports(result: FitResult, test: tuple[float, float], image_size: int, outputs: Outputs, processes: int,
                  extra_metrics: Optional[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Write the torchinfo summary, every figure of the run (``<stem>.run.json``) and the headline metrics;
    returns the figures.

    Args:
        result: what ``fit`` returned (its model on the CPU).
        test: (loss, accuracy) on the test split.
        processes: how many processes trained.
        t0: ``time.perf_counter()`` when the stage began, for ``wall_seconds``.
    """
    info = model_summary(result.model, image_size)
    write_text(str(info) + "\n", outputs.summary)
    best = result.history[result.best_epoch - 1] if result.best_epoch else {}
    metrics = {
        "val_acc": round(result.best_val_acc, 6),
        "test_acc": round(test[1], 6),
        "macs": int(info.total_mult_adds),  # per image, from torchinfo: deterministic, moves with pruning
        "val_loss": round(best["val/loss"], 6) if best else None,
        "test_loss": round(test[0], 6),
        "params": count_params(result.model),
        "fp32_bytes": state_dict_bytes(result.model),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "processes": processes,
        **(extra_metrics or {}),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(metrics, outputs.run)
    write_json({k: metrics[k] for k in HEADLINE}, outputs.metrics)
    return metrics
