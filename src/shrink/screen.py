"""The knee search's screen: short fine-tunes of a ladder of cuts, read on validation (``search`` reads the curve).

Apart from ``search`` because it trains: the ``plan`` stage, and ``evaluate``, import ``search`` alone, so editing
the training code reruns the screen and not the plan.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import CONTROL, ControlParams, PruneParams, RoundParams, SlimParams
from .search import ladder


def screen(parent: str | Path, cfg: PruneParams, *, slim_params: SlimParams, seed: int, data_dir: str | Path,
           teacher: str | Path, progress: Any = None) -> dict[str, Any]:
    """Fine-tune the uncut parent and each cut of ``cfg.search.ladder`` for ``cfg.search.epochs`` with the rounds'
    recipe (``run_round``, in a temporary folder, one process); returns the curve (widest first) and the
    reference. Every figure is validation (each cut's with its paired counts against the uncut); no decision
    reads a test label."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .data import load_meta, load_split, normalizer
    from .quantize import save_int8w
    from .rounds import run_round
    from .train import predict_logits

    s = cfg.search
    ft = dataclasses.replace(cfg.finetune, train=dataclasses.replace(cfg.finetune.train, nproc=1))
    widths = ladder(s.ladder)
    rounds = {f"w{w:g}": RoundParams(parent=s.parent, width=w, epochs=s.epochs) for w in widths}
    short = dataclasses.replace(cfg, finetune=ft, rounds=rounds, control=ControlParams(s.parent, s.epochs))
    val, norm = load_split(data_dir, "val"), normalizer(load_meta(data_dir))
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
            hit = predict_logits(model_from_checkpoint(ckpt), val.images, norm).argmax(1) == val.labels
            row = {"width": m["width"], "val_acc": round(hit.float().mean().item(), 6), "params": m["params"],
                   "int8w_bytes": save_int8w(ckpt, Path(tmp) / f"{name}.int8w.onnx"),
                   "val_acc_after_cut": m.get("val_acc_after_cut")}
            seconds = time.perf_counter() - t0  # to the progress line only: the curve holds what a rerun repeats
            if name == CONTROL:
                reference, uncut = row, hit
            else:  # paired with the uncut on the same images: the plan's lower bound needs these counts alone
                row.update(drop_pt=round((reference["val_acc"] - row["val_acc"]) * 100, 4), val_n=len(hit),
                           val_only_cut=int((hit & ~uncut).sum()), val_only_uncut=int((uncut & ~hit).sum()))
                rows.append(row)
            if progress is not None:
                progress(row, seconds)
    return {"parent": s.parent, "epochs": s.epochs, "reference": reference, "curve": rows}
