"""Measure a pruning schedule or criterion in one process: the tool behind docs/experiments/*-prune-*.md.

Runs what the prune stages run (``rounds.run_round``: the cut by ``prune.criterion``, then fine-tuning that keeps
the epoch ``prune.finetune.train.keep`` says: the last by default), round after round from a distilled checkpoint, without DVC, and prints one JSON
line per round: width, params, validation accuracy after the cut and after fine-tuning, test accuracy, the
weight-only int8 ONNX file's bytes and that file's validation and test accuracy. Decisions read the validation
figures only.

    PYTHONPATH=src python scripts/prune_sweep.py --data data/prepared --parent models/distill.pt \
        --teacher models/teacher.pt --widths 0.6,0.4,0.3,0.2 --epochs 2 --criterion l1 --seed 1 --out sweep.jsonl

Every option not given comes from params.yaml (``prune.*``, ``prune.finetune.*``, ``slim.l1``). Round ``i``
reproduces the prune stage with the same params (``parent`` the previous round) bit for bit when it runs with the
stage's torch threads (``--threads 0``). The checkpoints live in a temporary folder and are deleted at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from shrink.criteria import list_criteria

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--parent", default="models/distill.pt")
    ap.add_argument("--teacher", default="models/teacher.pt")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--widths", required=True, help="comma list of cumulative widths, one per round")
    ap.add_argument("--epochs", default="1", help="fine-tune epochs: one value, or one per round")
    ap.add_argument("--criterion", choices=list_criteria(), help="prune.criterion")
    ap.add_argument("--mode", choices=("layer", "global"))
    ap.add_argument("--round-to", type=int)
    ap.add_argument("--kd", type=int, choices=(0, 1), help="1: fine-tune with KD from the teacher")
    ap.add_argument("--l1", type=float, default=None, help="slim.l1 during fine-tuning")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 0: torch's default (one per core), what the prune stage uses: only that "
                         "count reproduces its fine-tuning bit for bit (another count sums floats in another "
                         "order: another sample of the same setting)")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", help="append the JSON lines here too")
    ap.add_argument("--hits", help="folder: save each round's int8w per-image hits on val and test "
                                   "(<label>-s<seed>-w<width>.pt), for paired intervals between runs")
    a = ap.parse_args(argv)
    a.widths = [float(w) for w in a.widths.split(",")]
    a.epochs = [int(e) for e in a.epochs.split(",")]
    a.epochs = a.epochs * len(a.widths) if len(a.epochs) == 1 else a.epochs
    if len(a.epochs) != len(a.widths):
        ap.error("--epochs: one value or one per width")
    return a


def configure(a: argparse.Namespace, params: Any) -> tuple[Any, Any]:
    """params.yaml's prune and slim sections with the command line's overrides, and the rounds as a chain
    ``round_1`` (cuts ``--parent``), ``round_2`` (cuts ``round_1``), ..."""
    from shrink.config import RoundParams

    ft = params.prune.finetune
    ft = dataclasses.replace(ft, distill=ft.distill if a.kd is None else bool(a.kd),
                             train=ft.train if a.lr is None else dataclasses.replace(ft.train, lr=a.lr))
    names = [f"round_{i}" for i in range(1, len(a.widths) + 1)]
    rounds = {n: RoundParams(parent=p, width=w, epochs=e)
              for n, p, w, e in zip(names, [Path(a.parent).stem, *names], a.widths, a.epochs)}
    chosen = {k: getattr(a, k) for k in ("criterion", "mode", "round_to") if getattr(a, k) is not None}
    slim = params.slim if a.l1 is None else dataclasses.replace(params.slim, l1=a.l1)
    return dataclasses.replace(params.prune, finetune=ft, rounds=rounds, **chosen), slim


def measure(a: argparse.Namespace, cfg: Any, slim: Any, name: str, parent: str | Path, tmp: Path) -> dict[str, Any]:
    """Round ``name`` cut from ``parent`` (its checkpoint goes to ``tmp/<name>.pt``): the figures of one line."""
    from shrink.checkpoint import load_checkpoint
    from shrink.data import load_meta, load_split, normalizer
    from shrink.measure import accuracy
    from shrink.quantize import save_int8w
    from shrink.rounds import run_round
    from shrink.runtime import load_runtime

    t0 = time.perf_counter()
    m = run_round(parent, cfg, name, slim_params=slim, seed=a.seed, data_dir=a.data, teacher=a.teacher,
                  out=tmp / f"{name}.pt", metrics_path=tmp / f"{name}.json")
    size = save_int8w(load_checkpoint(tmp / f"{name}.pt"), tmp / f"{name}.int8w.onnx")
    run, norm = load_runtime(tmp / f"{name}.int8w.onnx", torch.get_num_threads()), normalizer(load_meta(a.data))
    (q_val, hit_val), (q_test, hit_test) = (accuracy(run, load_split(a.data, s), norm) for s in ("val", "test"))
    rnd = cfg.rounds[name]
    if a.hits:
        Path(a.hits).mkdir(parents=True, exist_ok=True)
        torch.save({"val": hit_val, "test": hit_test}, Path(a.hits) / f"{a.label}-s{a.seed}-w{rnd.width}.pt")
    return {"width": rnd.width, "round_epochs": rnd.epochs, "params": m["params"], "channels": m["channels"],
            "val_after_cut": round(m["val_acc_after_cut"], 4), "val_acc": round(m["val_acc"], 4),
            "test_acc": round(m["test_acc"], 4), "int8w_bytes": size, "int8w_val": round(q_val, 4),
            "int8w_test": round(q_test, 4), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    from shrink.config import load_params

    a = parse_args(argv)
    os.environ["SHRINK_RESUME"] = "0"  # not a stage: no resume state in the project (docs/resume.md)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg, slim = configure(a, load_params(a.params))
    setup = {"label": a.label, "seed": a.seed, "criterion": cfg.criterion, "mode": cfg.mode, "round_to": cfg.round_to,
             "kd": cfg.finetune.distill, "l1": slim.l1, "lr": cfg.finetune.train.lr, "widths": a.widths,
             "epochs": a.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        parent: str | Path = a.parent
        for i, name in enumerate(cfg.rounds, start=1):
            line = json.dumps({**setup, "round": i, **measure(a, cfg, slim, name, parent, Path(tmp))})
            parent = Path(tmp) / f"{name}.pt"
            print(line, flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
