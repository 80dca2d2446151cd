"""Measure a Network Slimming schedule in one process: the tool behind docs/experiments/*-prune-schedule.md.

Runs what the prune stages run (``prune.slim``, then ``train.fit`` fine-tuning that keeps the best epoch on
validation), round after round from a distilled checkpoint, without DVC, and prints one JSON line per round:
width, params, validation accuracy after the cut and after fine-tuning, test accuracy, the weight-only int8
ONNX file's bytes and that file's validation and test accuracy. Decisions read the validation figures only.

    PYTHONPATH=src python scripts/prune_sweep.py --data data/prepared --parent models/distill.pt \
        --teacher models/teacher.pt --widths 0.6,0.4,0.3,0.2 --epochs 2 --seed 1 --out sweep.jsonl

Every option not given comes from params.yaml (``prune.*`` and ``prune.finetune.*``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--parent", default="models/distill.pt")
    ap.add_argument("--teacher", default="models/teacher.pt")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--widths", required=True, help="comma list of cumulative widths, one per round")
    ap.add_argument("--epochs", default="1", help="fine-tune epochs: one value, or one per round")
    ap.add_argument("--mode", choices=("layer", "global"))
    ap.add_argument("--round-to", type=int)
    ap.add_argument("--kd", type=int, choices=(0, 1), help="1: fine-tune with KD from the teacher")
    ap.add_argument("--l1", type=float, default=None, help="slim.l1 during fine-tuning")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; the prune stage uses torch's default (one per core), and only that "
                         "count reproduces its fine-tuning bit for bit (another count sums floats in another "
                         "order: another sample of the same setting)")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", help="append the JSON lines here too")
    a = ap.parse_args(argv)

    from shrink.checkpoint import load_checkpoint, model_from_checkpoint
    from shrink.config import load_params
    from shrink.data import load_meta, load_split, normalizer
    from shrink.distill import make_kd_loss
    from shrink.measure import accuracy
    from shrink.models import count_params
    from shrink.prune import base_channels_of, bn_l1_hook, rebuild_kwargs, slim
    from shrink.quantize import save_int8w
    from shrink.runtime import load_runtime
    from shrink.train import fit, loss_and_accuracy, seed_everything

    torch.set_num_threads(a.threads)
    params = load_params(a.params)
    cfg = params.prune
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("mode", a.mode), ("round_to", a.round_to)) if v is not None})
    ft = params.prune.finetune
    kd = ft.distill if a.kd is None else bool(a.kd)
    l1 = params.slim.l1 if a.l1 is None else a.l1
    widths = [float(w) for w in a.widths.split(",")]
    epochs = [int(e) for e in a.epochs.split(",")]
    epochs = epochs * len(widths) if len(epochs) == 1 else epochs
    if len(epochs) != len(widths):
        ap.error("--epochs: one value or one per width")
    train_cfg = ft.train if a.lr is None else dataclasses.replace(ft.train, lr=a.lr)

    meta = load_meta(a.data)
    norm = normalizer(meta)
    train, val, test = (load_split(a.data, s) for s in ("train", "val", "test"))
    parent = load_checkpoint(a.parent)
    model = model_from_checkpoint(parent)
    kwargs = parent["model_kwargs"]
    base = parent.get("base_channels") or base_channels_of(model, cfg.blocks)
    loss = make_kd_loss(model_from_checkpoint(a.teacher), ft.temperature, ft.alpha) if kd else None
    seed_everything(a.seed)
    setup = {"label": a.label, "seed": a.seed, "mode": cfg.mode, "round_to": cfg.round_to, "kd": kd, "l1": l1,
             "lr": train_cfg.lr, "widths": widths, "epochs": epochs}
    for i, (width, ep) in enumerate(zip(widths, epochs), start=1):
        t0 = time.perf_counter()
        model, keep = slim(model, width, cfg, base)
        kwargs = rebuild_kwargs(model, kwargs)
        cut = loss_and_accuracy(model, val, norm)[1]
        res = fit(model, train, val, meta, dataclasses.replace(train_cfg, epochs=ep), seed=a.seed, loss_fn=loss,
                  after_backward=bn_l1_hook(l1, cfg.blocks), desc=f"round {i} w{width:g}")
        model = res.model
        ckpt = {"model": parent["model"], "model_kwargs": kwargs, "num_classes": parent["num_classes"],
                "data": parent["data"], "state_dict": model.state_dict()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.int8w.onnx"
            size = save_int8w(ckpt, path)
            run = load_runtime(path, a.threads)
            q_val, q_test = accuracy(run, val, norm)[0], accuracy(run, test, norm)[0]
        row = {**setup, "round": i, "width": width, "round_epochs": ep, "params": count_params(model),
               "channels": {k: len(v) for k, v in keep.items()}, "val_after_cut": round(cut, 4),
               "val_acc": round(res.best_val_acc, 4), "test_acc": round(loss_and_accuracy(model, test, norm)[1], 4),
               "int8w_bytes": size, "int8w_val": round(q_val, 4), "int8w_test": round(q_test, 4),
               "seconds": round(time.perf_counter() - t0, 1)}
        line = json.dumps(row)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
