"""What the knee search measures (``search`` reads it): a round's probe after its full fine-tune, and the optional
screen (short fine-tunes of every rung of the ladder).

Apart from ``search`` because it runs models: the ``plan`` stages, and ``evaluate``, import ``search`` alone, so
editing the training code reruns the screen and the rounds, not the plans.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import CONTROL, ControlParams, PruneParams, RoundParams, SlimParams
from .search import ladder


def val_hits(ckpt: dict[str, Any], data_dir: str | Path) -> Any:
    """Which validation images ``ckpt``'s model gets right (a bool tensor, in the split's order)."""
    from .checkpoint import model_from_checkpoint
    from .data import load_meta, load_split, normalizer
    from .train import predict_logits

    val = load_split(data_dir, "val")
    return predict_logits(model_from_checkpoint(ckpt), val.images, normalizer(load_meta(data_dir))).argmax(1) == \
        val.labels


def paired(hit: Any, reference: Any) -> dict[str, int]:
    """The counts ``search.within`` reads: images, right by the cut alone, right by the reference alone."""
    return {"val_n": len(hit), "val_only_cut": int((hit & ~reference).sum()),
            "val_only_uncut": int((reference & ~hit).sum())}


def probe(name: str, width: float, checkpoint: str | Path, control: str | Path, data_dir: str | Path
          ) -> dict[str, Any]:
    """Round ``name``'s probe, after its full fine-tune: its width, parameters, weight-only int8 bytes and
    validation accuracy, with its validation hits paired against the control's (``paired``). Validation only:
    the next round's width is a decision, and no decision reads a test label."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .models import count_params
    from .quantize import save_int8w

    ckpt = load_checkpoint(checkpoint)
    hit, ref = val_hits(ckpt, data_dir), val_hits(load_checkpoint(control), data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        size = save_int8w(ckpt, Path(tmp) / f"{name}.int8w.onnx")
    return {"round": name, "width": width, "params": count_params(model_from_checkpoint(ckpt)),
            "int8w_bytes": size, "val_acc": round(hit.float().mean().item(), 6),
            "control_val_acc": round(ref.float().mean().item(), 6), **paired(hit, ref)}


def screen(parent: str | Path, cfg: PruneParams, *, slim_params: SlimParams, seed: int, data_dir: str | Path,
           teacher: str | Path, progress: Any = None) -> dict[str, Any]:
    """The screen: fine-tune the uncut parent and each cut of ``cfg.search.ladder`` for ``cfg.search.epochs`` with
    the rounds' recipe (``run_round``, in a temporary folder, one process); returns the curve (widest first) and the
    reference. Every figure is validation (each cut's with its paired counts against the uncut); no decision
    reads a test label."""
    from .checkpoint import load_checkpoint
    from .quantize import save_int8w
    from .rounds import run_round

    s = cfg.search
    ft = dataclasses.replace(cfg.finetune, train=dataclasses.replace(cfg.finetune.train, nproc=1))
    widths = ladder(s.ladder)
    rounds = {f"w{w:g}": RoundParams(parent=s.parent, width=w, epochs=s.epochs) for w in widths}
    short = dataclasses.replace(cfg, finetune=ft, rounds=rounds, control=ControlParams(s.parent, s.epochs))
    rows: list[dict[str, Any]] = []
    reference: dict[str, Any] = {}
    uncut = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in [CONTROL, *rounds]:
            t0 = time.perf_counter()
            out = Path(tmp) / f"{name}.pt"
            m = run_round(parent, short, name, slim_params=slim_params, seed=seed, data_dir=data_dir,
                          teacher=teacher, out=out, metrics_path=Path(tmp) / f"{name}.json",
                          stage=f"screen@{name}" if name != CONTROL else "screen@uncut")
            ckpt = load_checkpoint(out)
            hit = val_hits(ckpt, data_dir)
            row = {"width": m["width"], "val_acc": round(hit.float().mean().item(), 6), "params": m["params"],
                   "int8w_bytes": save_int8w(ckpt, Path(tmp) / f"{name}.int8w.onnx"),
                   "val_acc_after_cut": m.get("val_acc_after_cut")}
            seconds = time.perf_counter() - t0  # to the progress line only: the curve holds what a rerun repeats
            if name == CONTROL:
                reference, uncut = row, hit
            else:  # paired with the uncut on the same images: the plan's lower bound needs these counts alone
                row.update(drop_pt=round((reference["val_acc"] - row["val_acc"]) * 100, 4), **paired(hit, uncut))
                rows.append(row)
            if progress is not None:
                progress(row, seconds)
    return {"parent": s.parent, "epochs": s.epochs, "reference": reference, "curve": rows}
