"""One comparison of every model the pipeline made: accuracy, size, CPU latency.

Figures split in two files so that ``dvc metrics diff`` stays meaningful:

* ``metrics/evaluate.json`` — deterministic: test accuracy, parameters, bytes on disk, size ratio
  against the teacher, accuracy change against the teacher and against the model's fp32 source;
* ``metrics/latency.json`` — timings (noisy by nature): median batch-1 and batch-64 latency and
  speed ratios against the teacher, all measured in the same run.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint, state_dict_bytes
from .data import Split, normalizer
from .models import count_params

Runner = Callable[[torch.Tensor], torch.Tensor]  # normalised float NCHW -> logits


@dataclass(frozen=True)
class EvaluateParams:
    threads: int = 2  # torch / ONNX Runtime intra-op threads for every latency figure
    repeats: int = 15  # timed runs per model and batch size (the median is reported)
    warmup: int = 3  # untimed runs first
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    ship: str = "uint8"  # the artifact predictions.csv and `shrink predict` default to: uint8 | int8


@dataclass
class Entry:
    """One model to evaluate: a name, its kind and a runner."""

    name: str
    kind: str  # fp32 | fp16 | uint8 | int8
    path: Path
    runner: Runner
    params: int
    bytes: int
    source: str | None = None  # the fp32 model a quantized artifact came from


def fp32_entry(name: str, path: Path) -> Entry:
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    return Entry(name, "fp32", path, torch_runner(model), count_params(model), state_dict_bytes(model))


def torch_runner(model: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    """Wrap a model (an nn.Module or an ONNX runner) as an eval-mode, no-grad runner."""
    if isinstance(model, torch.nn.Module):
        model.eval()

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    return run


def predict_classes(runner: Runner, images: torch.Tensor, norm, batch_size: int = 256) -> torch.Tensor:
    """Predicted class of each uint8 image, in batches."""
    preds = [runner(norm(images[s : s + batch_size])).argmax(1) for s in range(0, len(images), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def accuracy(runner: Runner, data: Split, norm, batch_size: int = 256) -> tuple[float, torch.Tensor]:
    """(accuracy, predicted classes) of a runner on a labelled split."""
    pred = predict_classes(runner, data.images, norm, batch_size)
    return (pred == data.labels).float().mean().item(), pred


def latency_ms(runners: dict[str, Runner], x: torch.Tensor, repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time (ms) of each runner on ``x``, measured round-robin so noise hits all alike."""
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(x)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def compare(entries: list[Entry], test: Split, meta: dict[str, Any], p: EvaluateParams) -> tuple[dict, dict, dict]:
    """Evaluate every entry; returns (evaluate metrics, latency metrics, predictions per entry)."""
    torch.set_num_threads(p.threads)
    norm = normalizer(meta)
    acc, preds = {}, {}
    for e in entries:
        acc[e.name], preds[e.name] = accuracy(e.runner, test, norm)
    teacher = next((e for e in entries if e.name == "teacher"), entries[0])
    ev: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = {
            "kind": e.kind,
            "test_acc": round(acc[e.name], 6),
            "params": e.params,
            "bytes": e.bytes,
            "size_ratio_vs_teacher": round(teacher.bytes / e.bytes, 2),
            "acc_vs_teacher": round(acc[e.name] - acc[teacher.name], 6),
        }
        if e.source is not None and e.source in acc:
            row["acc_vs_source"] = round(acc[e.name] - acc[e.source], 6)
        ev[e.name] = row
    lat: dict[str, dict[str, float]] = {e.name: {} for e in entries}
    size = meta["image_size"]
    gen = torch.Generator().manual_seed(0)
    for bs in p.batch_sizes:
        x = norm(test.images[torch.randint(0, len(test.labels), (bs,), generator=gen)])
        ms = latency_ms({e.name: e.runner for e in entries}, x, p.repeats, p.warmup)
        for name, v in ms.items():
            lat[name][f"latency_b{bs}_ms"] = round(v, 3)
            lat[name][f"speedup_b{bs}_vs_teacher"] = round(ms[teacher.name] / v, 2)
    lat["_setup"] = {"threads": p.threads, "repeats": p.repeats, "image_size": size}
    return ev, lat, preds


def report_markdown(ev: dict, lat: dict, p: EvaluateParams) -> str:
    """The comparison table of every model, as markdown."""
    bs = p.batch_sizes
    head = ["model", "kind", "test acc", "Δ vs teacher", "params", "bytes", "× smaller"]
    head += [f"b{b} ms" for b in bs] + [f"b{b} × faster" for b in bs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in ev.items():
        l = lat.get(name, {})
        cells = [f"`{name}`", r["kind"], f"{r['test_acc']:.4f}", f"{r['acc_vs_teacher'] * 100:+.2f} pt",
                 f"{r['params']:,}", f"{r['bytes']:,}", f"{r['size_ratio_vs_teacher']:.1f}"]
        cells += [f"{l.get(f'latency_b{b}_ms', float('nan')):.2f}" for b in bs]
        cells += [f"{l.get(f'speedup_b{b}_vs_teacher', float('nan')):.1f}" for b in bs]
        lines.append("| " + " | ".join(cells) + " |")
    setup = lat.get("_setup", {})
    lines.append("")
    lines.append(f"Test split; latency: median of {setup.get('repeats')} runs after warm-up, "
                 f"{setup.get('threads')} threads, {setup.get('image_size')} px input; "
                 f"ratios are against the teacher measured in the same run.")
    return "\n".join(lines) + "\n"


def predictions_csv(ids: list[str], pred: torch.Tensor) -> str:
    """The course's submission format: ``Id,Category`` with the class index, one row per image."""
    rows = ["Id,Category"] + [f"{i},{int(c)}" for i, c in zip(ids, pred.tolist())]
    return "\n".join(rows) + "\n"


def csv_text(rows: list[dict[str, Any]], fields: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def models_plot(ev: dict[str, dict[str, Any]]) -> str:
    """CSV for the accuracy-vs-bytes plot: one point per model."""
    rows = [{"model": k, "kind": r["kind"], "bytes": r["bytes"], "test_acc": r["test_acc"]} for k, r in ev.items()]
    return csv_text(rows, ["model", "kind", "bytes", "test_acc"])


def prune_plot(ev: dict[str, dict[str, Any]], round_metrics: dict[str, dict[str, Any]], parent: str = "distill") -> str:
    """CSV for the accuracy-per-round plot; round 0 is the unpruned ``parent``."""
    rows = [{"round": 0, "model": parent, "width": 1.0, "params": ev[parent]["params"],
             "test_acc": ev[parent]["test_acc"], "val_acc_after_cut": ""}]
    for i, (name, m) in enumerate(round_metrics.items(), start=1):
        rows.append({"round": i, "model": name, "width": m["width"], "params": ev[name]["params"],
                     "test_acc": ev[name]["test_acc"], "val_acc_after_cut": m["val_acc_after_cut"]})
    return csv_text(rows, ["round", "model", "width", "params", "test_acc", "val_acc_after_cut"])


def file_bytes(path: str | os.PathLike) -> int:
    return Path(path).stat().st_size
