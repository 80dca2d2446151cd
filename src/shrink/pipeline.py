"""What every training stage does around ``train.fit``: load data, train, test, save, report.

Stages in ``stages/`` stay a screenful: ``shrink.stage`` hands them their params, they build the model
and the loss, and call ``run_training``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

from torch import nn

from .checkpoint import save_checkpoint, state_dict_bytes
from .config import TrainParams
from .data import data_meta, load_meta, load_split, normalizer
from . import resume as resume_state
from .io import write_json, write_text
from .models import count_params
from .distributed import context, finish, write_rank_hash
from .train import evaluate, fit, select_device


def model_summary(model: nn.Module, image_size: int):
    """torchinfo's summary of one image through ``model`` on the CPU (its text and ``total_mult_adds``)."""
    from torchinfo import summary

    return summary(model, input_size=(1, 3, image_size, image_size), verbose=0, device="cpu",
                   col_names=("output_size", "num_params"))


def summary_text(model: nn.Module, image_size: int) -> str:
    return str(model_summary(model, image_size))


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
    import json

    from dvclive import Live

    live = Live(str(live_dir), resume=True, save_dvc_exp=False, report=None, dvcyaml=None)
    live.log_params(json.loads(json.dumps(resolved)))  # plain types only (tuples become lists)
    live.end()


def run_training(
    model: nn.Module,
    *,
    name: str,
    model_kwargs: dict[str, Any],
    cfg: TrainParams,
    seed: int,
    resolved: dict[str, Any],
    data_dir: str | Path,
    out: str | Path,
    metrics_path: str | Path,
    live_dir: str | Path | None,
    loss_fn=None,
    after_backward=None,
    extra_metrics: Optional[dict[str, Any]] = None,
    extra_ckpt: Optional[dict[str, Any]] = None,
    desc: str = "train",
    backbone_lr_mult: float = 1.0,
) -> dict[str, Any]:
    """Train, evaluate on test, write checkpoint + summary + metrics; returns the metrics.

    Under torchrun (``cfg.nproc`` > 1) every rank trains and evaluates its part, and only rank 0
    writes; the other ranks return the same metrics without writing anything.

    Args:
        model: the network to train.
        name, model_kwargs: registry name and constructor arguments, saved to rebuild it.
        cfg: training params.
        seed: run seed.
        resolved: the params sections that made this model (saved in the checkpoint).
        data_dir: prepared data folder.
        out: checkpoint path; the summary goes to ``<out stem>.summary.txt``, every figure of the run
            (losses, bytes, epochs, timing, ``extra_metrics``) to ``<out stem>.run.json``.
        metrics_path: metrics JSON path: the ``HEADLINE`` figures only.
        live_dir: dvclive folder.
        loss_fn, after_backward: plug-ins of ``train.fit``.
        extra_metrics, extra_ckpt: stage-specific additions.
        desc: progress-bar label.
        backbone_lr_mult: see ``train.make_optimizer``.
    """
    t0 = time.perf_counter()
    meta = load_meta(data_dir)
    train, val, test = (load_split(data_dir, s) for s in ("train", "val", "test"))
    ctx = context(select_device(cfg.device))
    out = Path(out)
    # a killed run left its last epoch here (docs/resume.md); keyed by everything the result depends on
    resume = resume_state.for_stage(desc, {"resolved": resolved, "train": dataclasses.asdict(cfg), "seed": seed},
                                    (out, out.with_suffix(".summary.txt"), metrics_path, live_dir), ctx)
    result = fit(model, train, val, meta, cfg, seed=seed, loss_fn=loss_fn, after_backward=after_backward,
                 live_dir=live_dir, desc=desc, ctx=ctx, backbone_lr_mult=backbone_lr_mult, resume=resume)
    model = result.model.to(ctx.device)
    test_loss, test_acc = evaluate(model, test, normalizer(meta, ctx.device), cfg.eval_batch_size, ctx.device, ctx)
    model.cpu()
    write_rank_hash(model, ctx)
    if not ctx.is_writer:
        finish(ctx)
        return {"val_acc": round(result.best_val_acc, 6), "test_acc": round(test_acc, 6)}
    save_checkpoint(out, model, name=name, model_kwargs=model_kwargs, num_classes=len(meta["classes"]),
                    data_meta=data_meta(meta), params=resolved, extra=extra_ckpt)
    info = model_summary(model, meta["image_size"])
    write_text(str(info) + "\n", out.with_suffix(".summary.txt"))
    best = result.history[result.best_epoch - 1] if result.best_epoch else {}
    metrics = {
        "val_acc": round(result.best_val_acc, 6),
        "test_acc": round(test_acc, 6),
        "macs": int(info.total_mult_adds),  # per image, from torchinfo: deterministic, moves with pruning
        "val_loss": round(best["val/loss"], 6) if best else None,
        "test_loss": round(test_loss, 6),
        "params": count_params(model),
        "fp32_bytes": state_dict_bytes(model),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "processes": ctx.world,
        **(extra_metrics or {}),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(metrics, out.with_suffix(".run.json"))
    write_json({k: metrics[k] for k in HEADLINE}, metrics_path)
    if live_dir is not None:
        log_live_params(live_dir, resolved)
    if resume is not None:
        resume.clear()  # complete: the outputs are written, nothing to resume
    finish(ctx)  # the other ranks wait here until every output is written
    print(f"{desc}: val acc {metrics['val_acc']:.4f}  test acc {metrics['test_acc']:.4f}  "
          f"params {metrics['params']:,}  fp32 {metrics['fp32_bytes']:,} B  {metrics['wall_seconds']} s")
    return metrics
