"""Measuring every model the pipeline made: one row per model and runtime, with its accuracy, size and speed.

Rows (``collect``), all loaded through ``shrink.runtime.load_runtime`` and timed by its one interleaved timer:

* every fp32 checkpoint (teacher, student, distill, prune rounds) in PyTorch eager, **and** exported to
  ONNX and run by ORT fp32 (``<model>.ort``), so the report shows what each compression step bought over
  simply changing runtime;
* every quantized artifact of every prune round and of the models in ``quantize.models``
  (``<model>.<format>``, one per format of ``shrink.formats``), each in the runtime its format runs in (the
  ``runtime`` column says which).

``compare`` measures every row: its validation accuracy (what the ship rule reads, with each image's
correctness) and test accuracy (what is reported, with each image's correctness too: ``on_test`` pairs two rows
on the same test images, the error bar of every comparison the report makes), parameters, bytes, and min and
median latency per batch size, as the rows of ``metrics/evaluate.json`` and ``metrics/latency.json``.
``ship_table`` hands the ship rule (``shrink.ship``) exactly those figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import state_dict_bytes
from .config import EvaluateParams
from .data import Split, normalizer
from .formats import get_format, list_formats
from .models import count_params
from .runtime import Runtime, Timing, interleaved, load_runtime, ort_fp32
from .ship import Row
from .stats import Paired, paired
from .train import predict_logits

BATCH = 256  # images per forward pass when counting hits


@dataclass
class Entry:
    """One row: a name, a loaded runtime, its parameter count, bytes and fp32 source."""

    name: str
    run: Runtime
    params: int
    bytes: int
    source: str | None = None  # the fp32 model an artifact or an ORT export came from

    @property
    def kind(self) -> str:
        return self.run.kind


@dataclass
class Measured:
    """What ``compare`` measured: the rows of evaluate.json and latency.json, the timing, and per row which
    validation images (``correct``) and which test images (``test_correct``) it got right."""

    ev: dict[str, dict[str, Any]]
    lat: dict[str, dict[str, Any]]
    timing: Timing
    correct: dict[str, torch.Tensor]
    test_correct: dict[str, torch.Tensor] = field(default_factory=dict)

    def on_test(self, a: str, b: str, confidence: float = 0.95) -> Paired:
        """Row ``a`` minus row ``b`` on the test images, with its paired two-sided interval (``stats.paired``)."""
        return paired(self.test_correct[a].tolist(), self.test_correct[b].tolist(), confidence)


def collect(models: Path, fp32_names: list[str], quantized: list[str], threads: int, workdir: Path) -> list[Entry]:
    """Every row: fp32 checkpoints (eager, then their ORT fp32 exports in ``workdir``), then the artifacts.

    Args:
        models: the folder of ``<name>.pt`` and ``quantized/<name>.<suffix>``.
        fp32_names: fp32 checkpoints, in report order.
        quantized: the models with quantized artifacts (``quantize.models`` and the rounds).
        threads: ONNX Runtime intra-op threads.
        workdir: where the ORT fp32 exports go (a temporary folder: they are measured, not shipped).
    """
    entries: list[Entry] = []
    for name in fp32_names:
        run = load_runtime(models / f"{name}.pt", threads)
        # bytes of the fp32 rows: the state_dict alone, as the course measured model size
        entries.append(Entry(name, run, count_params(run.model), state_dict_bytes(run.model)))
    counts = {e.name: e.params for e in entries}  # quantize.models name fp32 models (checked by config.Params)
    for name in fp32_names:
        run = ort_fp32(models / f"{name}.pt", workdir, threads)
        entries.append(Entry(f"{name}.ort", run, counts[name], run.bytes, source=name))
    for src in quantized:
        for kind in list_formats():
            run = load_runtime(models / "quantized" / f"{src}.{get_format(kind).suffix}", threads)
            entries.append(Entry(f"{src}.{kind}", run, counts[src], run.bytes, source=src))
    return entries


def accuracy(runner: Callable[[torch.Tensor], torch.Tensor], data: Split, norm: Callable,
             batch_size: int = BATCH) -> tuple[float, torch.Tensor]:
    """(accuracy, whether each image was classified right) of a runner on a labelled split."""
    hit = predict_logits(runner, data.images, norm, batch_size).argmax(1) == data.labels
    return hit.float().mean().item(), hit


def compare(entries: list[Entry], test: Split, meta: dict[str, Any], p: EvaluateParams, val: Split,
            reference: str | None = None) -> Measured:
    """Measure every entry: accuracies on ``test`` (reported) and ``val`` (what the ship rule reads), then timings.

    Args:
        meta: the prepared data's meta (normalisation, image size).
        p: ``evaluate`` params (threads, repeats, warm-up, batch sizes).
        reference: the row every speed ratio is also taken against (``distill.ort``), when it was measured.
    """
    torch.set_num_threads(p.threads)
    norm = normalizer(meta)
    on_test = {e.name: accuracy(e.run, test, norm) for e in entries}
    on_val = {e.name: accuracy(e.run, val, norm) for e in entries}
    ev = accuracy_rows(entries, {k: a for k, (a, _) in on_test.items()}, {k: a for k, (a, _) in on_val.items()})
    gen = torch.Generator().manual_seed(0)
    calls = {}
    for bs in p.batch_sizes:
        x = norm(test.images[torch.randint(0, len(test.labels), (bs,), generator=gen)])
        for e in entries:
            calls[(e.name, bs)] = lambda run=e.run, x=x: run(x)
    timing = interleaved(calls, p.repeats, threads=p.threads, warmup=p.warmup, min_time=0.01)
    lat = latency_rows(entries, timing, p, meta, reference if any(e.name == reference for e in entries) else None)
    return Measured(ev, lat, timing, {k: hit for k, (_, hit) in on_val.items()},
                    {k: hit for k, (_, hit) in on_test.items()})


def accuracy_rows(entries: list[Entry], acc: dict[str, float], val_acc: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The rows of evaluate.json: kind, runtime, accuracies, parameters, bytes, ratios to the teacher and source."""
    teacher = next((e for e in entries if e.name == "teacher"), entries[0])
    ev: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = {
            "kind": e.kind,
            "runtime": e.run.label,
            "test_acc": round(acc[e.name], 6),
            "val_acc": round(val_acc[e.name], 6),
            "params": e.params,
            "bytes": e.bytes,
            "size_ratio_vs_teacher": round(teacher.bytes / e.bytes, 2),
            "acc_vs_teacher": round(acc[e.name] - acc[teacher.name], 6),
        }
        if e.source is not None and e.source in acc:
            row["acc_vs_source"] = round(acc[e.name] - acc[e.source], 6)
        ev[e.name] = row
    return ev


def latency_rows(entries: list[Entry], timing: Timing, p: EvaluateParams, meta: dict[str, Any],
                 ref: str | None) -> dict[str, dict[str, Any]]:
    """The rows of latency.json: median and min per batch size, speed-ups against the teacher (and ``ref``),
    and ``_setup``: how they were measured."""
    teacher = next((e for e in entries if e.name == "teacher"), entries[0])
    lat: dict[str, dict[str, Any]] = {}
    for e in entries:
        row: dict[str, Any] = {"runtime": e.run.label}
        for bs in p.batch_sizes:
            med, low = timing.median_ms((e.name, bs)), timing.min_ms((e.name, bs))
            row[f"latency_b{bs}_ms"] = round(med, 4)
            row[f"min_b{bs}_ms"] = round(low, 4)
            row[f"speedup_b{bs}_vs_teacher"] = round(timing.median_ms((teacher.name, bs)) / med, 3)
            if ref:
                row[f"speedup_b{bs}_vs_{ref}"] = round(timing.median_ms((ref, bs)) / med, 3)
        lat[e.name] = row
    setup = timing.setup()
    # keys named latency_* / speedup_* / *_ms are the timing ones (tests and `dvc metrics diff` readers drop them)
    lat["_setup"] = {"threads": p.threads, "repeats": p.repeats, "warmup": p.warmup, "image_size": meta["image_size"],
                     "statistic": "latency_*: median of the repeats; min_*: their min",
                     "latency_machine": {k: setup[k] for k in ("load_before", "load_after", "warnings")}}
    return lat


def ship_table(entries: list[Entry], m: Measured, batch_sizes: list[int]) -> dict[str, Row]:
    """The ship rule's table: each row's figures as evaluate.json and latency.json hold them (rounded), so the
    choice reads exactly what the files show."""
    return {e.name: Row(e.name, e.source or e.name, e.kind, e.bytes, m.ev[e.name]["val_acc"],
                        tuple(m.correct[e.name].tolist()),
                        {b: m.lat[e.name][f"min_b{b}_ms"] for b in batch_sizes},
                        {b: m.lat[e.name][f"latency_b{b}_ms"] for b in batch_sizes}) for e in entries}
