"""One comparison of every model the pipeline made: accuracy, size, CPU latency, and what ships.

Rows, all loaded through ``shrink.runtime.load_runtime`` and timed by its one interleaved timer:

* every fp32 checkpoint (teacher, student, distill, prune rounds) in PyTorch eager, **and** exported to
  ONNX and run by ORT fp32 (``<model>.ort``), so the report shows what each compression step bought over
  simply changing runtime;
* every quantized artifact of every prune round and of the models in ``quantize.models``
  (``<model>.<kind>``, kinds fp16, uint8, int8, int8w), each in the runtime that suits it (the ``runtime``
  column says which).

Each row has its validation accuracy (what the ship rule reads) and its test accuracy (what is reported).

Figures split in three files so that ``dvc metrics diff`` and ``dvc exp show`` show what a change did:

* ``metrics/summary.json`` — the stage's only metrics file (``headline``): the shipped artifact's name,
  bytes, validation and test accuracy, test accuracy against ``distill`` and MACs per image (every round's
  figures are in ``plots/prune.csv``, the trade-off curve). Deterministic: a rerun with the same
  inputs gives the same file, so a diff lists only what a change caused;
* ``metrics/evaluate.json`` — a plain output, every row: kind, runtime, test accuracy, parameters,
  bytes, size ratio and accuracy change against the teacher and against the fp32 source, and the
  ``shipped`` section (artifact, kind, bytes, accuracy against its fp32 parent, the rule used);
* ``metrics/latency.json`` — a plain output, timings (noisy by nature): min and median batch-1 / batch-64
  latency, speed ratios against the teacher and against ``distill.ort`` (the unpruned student in ORT fp32),
  all measured in the same run, and the shipped artifact's timings, its two speed ratios and the verdicts.
  Not a metrics file, because every rerun measures every figure again: diff it on request with
  ``git diff metrics/latency.json`` or ``dvc plots diff plots/latency.csv``.

The shipped artifact is also written to a stable place, ``shipped/model.onnx`` with ``shipped/model.json``
(classes, input size, normalisation, kind), whichever kind won (``write_shipped``); dvc.yaml declares it
as the ``artifacts:`` entry ``shrink-classifier``. ``plots/confusion.csv`` holds its (actual, predicted)
class on every test image.

What ships (``choose_shipped``): among the quantized artifacts of the unpruned distilled student (when
``quantize.models`` lists ``distill``, as by default) and of every prune round,

1. *accurate*: **validation** accuracy >= the fp32 ``distill`` checkpoint's validation accuracy minus
   ``evaluate.max_drop`` points;
2. *fast*: at every batch size, min latency within 10 % of ``distill.ort``'s, the unpruned student in ORT
   fp32 (what a user gets for free); on a busy machine the band widens to ``distill.ort``'s own spread (its
   median / min), since closer runtimes are not told apart. Each verdict also records the ratio to the
   fastest runtime of the artifact's own network (its accurate artifacts, its fp32 net in eager and in ORT),
   which is the bar only when ``distill.ort`` was not measured: at batch 64 an int8w file runs 5-15 % slower
   than its own network in ORT fp32 (its weights are dequantized on every call; 10-30 % faster at batch 1),
   so that bar turned on noise and once shipped a 0.2 cut's file over the smaller 0.15 cut's, which was
   no slower;
3. ship the smallest file among those passing both; equal sizes go to the order int8w, int8, uint8, fp16.

Fallbacks: no artifact passes both -> the fastest accurate one (min latency at the largest batch); none is
accurate -> the most accurate one on validation. No test label decides anything (a test permutes them):
the test accuracy of what ships is reported, as the test split is there for. Latency decides through a
10 % band on the *min* of the repeats (the least noisy statistic on a shared machine); a deep round's
int8w files run 1.3-1.7x as fast as ``distill.ort``, far inside the band, so noise does not move the choice;
a run where it does is visible in ``latency.json``'s ``shipped.latency_verdicts``. ``evaluate.ship: <kind>`` ships the smallest accurate
artifact of that kind (timings decide nothing then; none accurate -> the most accurate of that kind).
"""
from __future__ import annotations

import csv
import io
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import state_dict_bytes
from .config import EvaluateParams, Params
from .formats import get_format, list_formats, tie_order
from .charts import csv_rows, read_live_curves, write_charts
from .data import Split, load_meta, load_split, normalizer
from .io import atomic_path, read_json, write_json, write_text
from .models import count_params
from .quantize import export_onnx
from .runtime import Runtime, Timing, interleaved, load_runtime, ort_fp32

FAST_BAND = 1.10  # "fast": within 10 % of distill.ort (of the same network's fastest runtime without it)
REFERENCE_MODEL = "distill"  # the unpruned student: the accuracy bar of the ship rule
REFERENCE = f"{REFERENCE_MODEL}.ort"  # it in ORT fp32: what every ratio of the shipped artifact is against


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


def collect(models: Path, fp32_names: list[str], quantized: list[str], threads: int, workdir: Path) -> list[Entry]:
    """Every row: fp32 checkpoints (eager, then their ORT fp32 exports in ``workdir``), then the artifacts.

    Args:
        models: the folder of ``<name>.pt`` and ``quantized/<name>.<kind>.<ext>``.
        fp32_names: fp32 checkpoints, in report order.
        quantized: the models with quantized artifacts (``quantize.models``).
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


def predict_classes(runner: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, norm,
                    batch_size: int = 256) -> torch.Tensor:
    """Predicted class of each uint8 image, in batches."""
    with torch.inference_mode():
        preds = [runner(norm(images[s : s + batch_size])).argmax(1) for s in range(0, len(images), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def accuracy(runner: Callable[[torch.Tensor], torch.Tensor], data: Split, norm, batch_size: int = 256) -> tuple[float, torch.Tensor]:
    """(accuracy, predicted classes) of a runner on a labelled split."""
    pred = predict_classes(runner, data.images, norm, batch_size)
    return (pred == data.labels).float().mean().item(), pred


def compare(entries: list[Entry], test: Split, meta: dict[str, Any], p: EvaluateParams,
            val: Split | None = None) -> tuple[dict, dict, Timing]:
    """Evaluate every entry; returns (evaluate metrics, latency metrics, the timing).

    ``val``: the validation split, whose accuracy (``val_acc``) is what the ship rule reads; the test
    accuracy is reported, never used to decide.
    """
    torch.set_num_threads(p.threads)
    norm = normalizer(meta)
    acc = {e.name: accuracy(e.run, test, norm)[0] for e in entries}
    val_acc = {e.name: accuracy(e.run, val, norm)[0] for e in entries} if val is not None else {}
    teacher = next((e for e in entries if e.name == "teacher"), entries[0])
    ev: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = {
            "kind": e.kind,
            "runtime": e.run.label,
            "test_acc": round(acc[e.name], 6),
            **({"val_acc": round(val_acc[e.name], 6)} if val_acc else {}),
            "params": e.params,
            "bytes": e.bytes,
            "size_ratio_vs_teacher": round(teacher.bytes / e.bytes, 2),
            "acc_vs_teacher": round(acc[e.name] - acc[teacher.name], 6),
        }
        if e.source is not None and e.source in acc:
            row["acc_vs_source"] = round(acc[e.name] - acc[e.source], 6)
        ev[e.name] = row

    gen = torch.Generator().manual_seed(0)
    calls = {}
    for bs in p.batch_sizes:
        x = norm(test.images[torch.randint(0, len(test.labels), (bs,), generator=gen)])
        for e in entries:
            calls[(e.name, bs)] = lambda run=e.run, x=x: run(x)
    timing = interleaved(calls, p.repeats, threads=p.threads, warmup=p.warmup, min_time=0.01)
    ref = REFERENCE if any(e.name == REFERENCE for e in entries) else None
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
    return ev, lat, timing


def choose_shipped(ev: dict[str, dict[str, Any]], lat: dict[str, dict[str, Any]], sources: list[str],
                   p: EvaluateParams, reference: str = REFERENCE_MODEL) -> tuple[str, str, dict[str, Any]]:
    """(row name, rule, per-candidate verdicts) of the artifact that ships; the rule is in the module doc.

    Reads validation accuracies (``ev[...]["val_acc"]``), bytes and latencies only: no test figure decides.

    Args:
        ev: every row (``metrics/evaluate.json``); lat: every row's timings (``metrics/latency.json``).
        sources: the fp32 models whose quantized artifacts compete (the reference and every prune round).
        p: ``evaluate`` params (``ship``, ``max_drop``, ``batch_sizes``).
        reference: the unpruned student: the accuracy bar is its fp32 validation accuracy, the speed bar its
            ORT fp32 export (``<reference>.ort``, when measured).
    """
    ties = tie_order()
    kinds = ties if p.ship == "auto" else (p.ship,)
    cands = [f"{s}.{k}" for s in sources for k in kinds if f"{s}.{k}" in ev]
    if not cands:
        raise ValueError(f"no {'quantized' if p.ship == 'auto' else p.ship} artifact of {', '.join(sources)} to "
                         f"ship (expected models/quantized/<model>.*)")
    order = {c: (ties.index(c.rsplit('.', 1)[1]), i) for i, c in enumerate(cands)}
    bar = ev[reference]["val_acc"] - p.max_drop / 100
    accurate = [c for c in cands if ev[c]["val_acc"] >= bar - 1e-9]
    bs = p.batch_sizes

    def band(name: str, b: int) -> float:
        # the band widens by the faster runtime's own spread (median / min): on a busy machine two runtimes
        # whose samples overlap are not told apart, so noise cannot make an equally fast artifact "slow"
        return max(FAST_BAND, lat[name][f"latency_b{b}_ms"] / lat[name][f"min_b{b}_ms"])

    ref_ort = f"{reference}.ort" if f"{reference}.ort" in lat else None
    verdicts = {}
    for c in cands:
        src = c.rsplit(".", 1)[0]
        # the runtimes of the same network: its accurate artifacts, its fp32 net in eager and in ORT
        own = [n for n in (*(a for a in accurate if a.rsplit(".", 1)[0] == src), src, f"{src}.ort") if n in lat]
        own = own or [c]
        v: dict[str, Any] = {"val_acc": ev[c]["val_acc"], "accurate": c in accurate}
        fast = True
        for b in bs:
            key = f"min_b{b}_ms"
            best = min(own, key=lambda n: lat[n][key])
            v[f"b{b}_vs_fastest"] = round(lat[c][key] / lat[best][key], 3)
            if ref_ort:  # the bar: what a user gets for free; the own-network ratio is information
                v[f"b{b}_vs_{ref_ort}"] = round(lat[c][key] / lat[ref_ort][key], 3)
                fast &= v[f"b{b}_vs_{ref_ort}"] <= band(ref_ort, b)
            else:
                fast &= v[f"b{b}_vs_fastest"] <= band(best, b)
        v["fast"] = bool(fast)
        verdicts[c] = v
    pct = f"{(FAST_BAND - 1) * 100:.0f} %"
    if p.ship != "auto":  # a kind the user asked for: the smallest accurate one, timings decide nothing
        passing = [c for c in cands if verdicts[c]["accurate"]]
        if passing:
            name = min(passing, key=lambda c: (ev[c]["bytes"], order[c]))
            return name, (f"the smallest {p.ship} artifact (evaluate.ship) whose validation accuracy is within "
                          f"{p.max_drop:g} points of {reference}'s ({ev[reference]['val_acc']:.4f})"), verdicts
        name = max(cands, key=lambda c: (ev[c]["val_acc"], -ev[c]["bytes"]))
        return name, (f"fallback: no {p.ship} artifact (evaluate.ship) within {p.max_drop:g} validation points of "
                      f"{reference}; the most accurate one"), verdicts
    passing = [c for c in cands if verdicts[c]["accurate"] and verdicts[c]["fast"]]
    if passing:
        name = min(passing, key=lambda c: (ev[c]["bytes"], order[c]))
        rule = (f"the smallest artifact whose validation accuracy is within {p.max_drop:g} points of {reference}'s "
                f"({ev[reference]['val_acc']:.4f}) and whose min latency at batch {', '.join(map(str, bs))} is within "
                f"{pct} (or the measured spread) of "
                + (f"`{ref_ort}`'s" if ref_ort else "the fastest runtime of its network"))
    elif accurate:
        name = min(accurate, key=lambda c: (lat[c][f"min_b{max(bs)}_ms"], order[c]))
        rule = f"fallback: no artifact both accurate and fast; the fastest accurate one at batch {max(bs)}"
    else:
        name = max(cands, key=lambda c: (ev[c]["val_acc"], -ev[c]["bytes"]))
        rule = f"fallback: no artifact within {p.max_drop:g} validation points of {reference}; the most accurate one"
    return name, rule, verdicts


def shipped_sections(name: str, rule: str, verdicts: dict, entries: list[Entry], ev: dict, lat: dict,
                     p: EvaluateParams, reference: str = REFERENCE_MODEL) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``shipped`` sections of evaluate.json (deterministic) and latency.json (timings)."""
    e = next(x for x in entries if x.name == name)
    det = {"name": name, "artifact": str(e.run.path), "kind": e.kind, "runtime": e.run.label, "bytes": e.bytes,
           "val_acc": ev[name]["val_acc"], "test_acc": ev[name]["test_acc"], "parent": e.source,
           "acc_vs_parent": ev[name].get("acc_vs_source"), "reference": reference,
           "test_acc_vs_reference": round(ev[name]["test_acc"] - ev[reference]["test_acc"], 6),
           # the rule's *name* only: which branch of it applied depends on the timings, so that goes to latency.json
           "rule": "auto" if p.ship == "auto" else f"evaluate.ship = {p.ship}"}
    timing: dict[str, Any] = {"name": name, "latency_rule_applied": rule}
    for b in p.batch_sizes:
        timing[f"latency_b{b}_ms"] = lat[name][f"latency_b{b}_ms"]
        timing[f"min_b{b}_ms"] = lat[name][f"min_b{b}_ms"]
        if REFERENCE in lat:
            timing[f"speedup_b{b}_vs_{REFERENCE}"] = lat[name][f"speedup_b{b}_vs_{REFERENCE}"]
            timing[f"speedup_min_b{b}_vs_{REFERENCE}"] = round(lat[REFERENCE][f"min_b{b}_ms"] / lat[name][f"min_b{b}_ms"], 3)
    timing["latency_verdicts"] = verdicts  # accurate / fast per candidate, and how far from the fastest
    return det, timing


def report_markdown(ev: dict, lat: dict, p: EvaluateParams, shipped: dict[str, Any] | None = None) -> str:
    """The comparison table of every model (each row names its runtime), as markdown."""
    bs = p.batch_sizes
    ref = REFERENCE if REFERENCE in lat else None
    head = ["model", "kind", "runtime", "val acc", "test acc", "Δ vs teacher", "params", "bytes", "× smaller"]
    head += [f"b{b} ms" for b in bs] + [f"b{b} × vs teacher" for b in bs]
    head += [f"b{b} × vs `{ref}`" for b in bs] if ref else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in ev.items():
        l = lat.get(name, {})
        val = f"{r['val_acc']:.4f}" if "val_acc" in r else ""
        cells = [f"`{name}`", r["kind"], r["runtime"], val, f"{r['test_acc']:.4f}", f"{r['acc_vs_teacher'] * 100:+.2f} pt",
                 f"{r['params']:,}", f"{r['bytes']:,}", f"{r['size_ratio_vs_teacher']:.1f}"]
        cells += [f"{l.get(f'latency_b{b}_ms', float('nan')):.3f}" for b in bs]
        cells += [f"{l.get(f'speedup_b{b}_vs_teacher', float('nan')):.1f}" for b in bs]
        cells += [f"{l.get(f'speedup_b{b}_vs_{ref}', float('nan')):.2f}" for b in bs] if ref else []
        lines.append("| " + " | ".join(cells) + " |")
    s = lat.get("_setup", {})
    s = {**s, **s.get("latency_machine", {})}
    lines += ["", f"What ships is chosen on the validation split; test accuracy is reported only. Latency: median of {s.get('repeats')} interleaved samples after {s.get('warmup')} "
                  f"warm-up runs, {s.get('threads')} threads, {s.get('image_size')} px input; ratios against models "
                  f"measured in the same run. `<model>.ort` is the fp32 checkpoint exported to ONNX and run by ONNX "
                  f"Runtime (ORT): the gain of changing runtime alone. Load average {s.get('load_before')} before, "
                  f"{s.get('load_after')} after."]
    lines += [f"", *(f"> **Warning:** {w}" for w in s.get("warnings", []))]
    if shipped:
        lines += ["", f"**Shipped:** `{shipped['artifact']}` ({shipped['kind']}, {shipped['runtime']}, "
                      f"{shipped['bytes']:,} B, val acc {shipped['val_acc']:.4f}, test acc {shipped['test_acc']:.4f}: "
                      f"{shipped['test_acc_vs_reference'] * 100:+.2f} pt vs `{shipped['reference']}`). "
                      f"Rule: {shipped['rule']} (the branch applied is in `metrics/latency.json`)."]
    return "\n".join(lines) + "\n"


def submission_id(file_id: str) -> str:
    """The ``Id`` the course's graders expect: the image's integer index (``0000.jpg`` -> ``0``).

    Food-11's ``evaluation/`` files are named by their zero-padded index; the course's submissions
    wrote ``enumerate`` indices, i.e. the integer. A name that is not a number stays as it is.
    """
    return str(int(file_id)) if file_id.isdigit() else file_id


def predictions_csv(ids: list[str], pred: torch.Tensor) -> str:
    """The course's submission format: ``Id,Category`` (class index), one row per image, csv-quoted."""
    rows = [{"Id": submission_id(i), "Category": int(c)} for i, c in zip(ids, pred.tolist())]
    return csv_text(rows, ["Id", "Category"])


def csv_text(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def models_plot(ev: dict[str, dict[str, Any]]) -> str:
    """CSV for the accuracy-vs-bytes plot: one point per model."""
    rows = [{"model": k, "kind": r["kind"], "bytes": r["bytes"], "test_acc": r["test_acc"]} for k, r in ev.items()]
    return csv_text(rows, ["model", "kind", "bytes", "test_acc"])


PRUNE_FIELDS = ["round", "model", "width", "params", "macs", "kind", "bytes", "val_acc", "test_acc", "fp32_test_acc",
                "val_acc_after_cut"]


def prune_plot(ev: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]], kind: str | None,
               parent: str = REFERENCE_MODEL) -> str:
    """CSV of the trade-off over the rounds (``plots/prune.csv``); round 0 is the unpruned ``parent``.

    One row per model: its width, parameters, MACs per image, and its ``kind`` artifact (the shipped
    artifact's kind): bytes, validation and test accuracy; ``fp32_test_acc`` is the checkpoint's own.
    Without an artifact of that kind (e.g. ``parent`` not in ``quantize.models``) the row has the fp32
    checkpoint's figures and its state_dict bytes.

    Args:
        ev: every row (``metrics/evaluate.json``).
        runs: ``<model>.run.json`` of ``parent`` and of every round, in pipeline order.
        kind: the shipped artifact's kind (None: the fp32 rows).
        parent: the unpruned model (round 0).
    """
    rows = []
    for i, (name, m) in enumerate(runs.items()):
        art = ev.get(f"{name}.{kind}") or ev[name]
        rows.append({"round": i, "model": name, "width": m.get("width", 1.0), "params": ev[name]["params"],
                     "macs": m.get("macs", ""), "kind": art["kind"], "bytes": art["bytes"],
                     "val_acc": art.get("val_acc", ""), "test_acc": art["test_acc"],
                     "fp32_test_acc": ev[name]["test_acc"], "val_acc_after_cut": m.get("val_acc_after_cut", "")})
    return csv_text(rows, PRUNE_FIELDS)


def headline(ev: dict[str, dict[str, Any]], macs: int | None) -> dict[str, Any]:
    """The metrics of the evaluate stage (``metrics/summary.json``): the shipped artifact's figures, all
    deterministic (every round's figures are in ``plots/prune.csv`` and ``metrics/evaluate.json``).

    Args:
        ev: every row and the ``shipped`` section (``metrics/evaluate.json``).
        macs: multiply-accumulates per image of the shipped artifact's network (its fp32 parent's).
    """
    if "shipped" not in ev:
        return {}
    s = ev["shipped"]
    return {"shipped": {"name": s["name"], "bytes": s["bytes"], "val_acc": s["val_acc"], "test_acc": s["test_acc"],
                        "test_acc_vs_distill": s["test_acc_vs_reference"], "macs": macs}}


def write_shipped(entry: Entry, folder: str | Path) -> dict[str, Any]:
    """Write the shipped artifact as ``folder/model.onnx`` and ``folder/model.json``; returns the JSON.

    ONNX artifacts (int8, int8w) are copied byte for byte. A ``.pt`` artifact (fp16, uint8) is exported to
    ONNX from the network it loads into (its dequantized fp32 weights), so users need ONNX Runtime alone
    either way; ``model.json``'s ``onnx`` then says ``fp32 export of <kind>`` and the file is larger than
    the ``.pt`` that was measured.
    """
    folder = Path(folder)
    data = entry.run.meta["data"]
    size = int(data["image_size"])
    if entry.run.path.suffix.lower() == ".onnx":
        with atomic_path(folder / "model.onnx") as tmp:
            shutil.copyfile(entry.run.path, tmp)
        onnx_note = f"{entry.kind}, copied from {entry.run.path.name}"
    else:
        export_onnx(entry.run.model, torch.zeros(1, 3, size, size), folder / "model.onnx",
                    meta={**entry.run.meta, "kind": "fp32"})
        onnx_note = f"fp32 export of the {entry.kind} artifact {entry.run.path.name}"
    info = {"name": entry.name, "kind": entry.kind, "onnx": onnx_note, "classes": list(data["classes"]),
            "input": {"name": "input", "shape": [None, 3, size, size], "layout": "NCHW, RGB"},
            "image_size": size,
            # x = (pixel / 255 - mean) / std per channel, pixels 0..255 after an antialiased resize to image_size
            "mean": list(data["mean"]), "std": list(data["std"])}
    write_json(info, folder / "model.json")
    return info


def confusion_csv(classes: list[str], actual: torch.Tensor, predicted: torch.Tensor) -> str:
    """``actual,predicted`` class names, one row per test image (DVC's ``confusion`` plot template)."""
    rows = [{"actual": classes[a], "predicted": classes[b]} for a, b in zip(actual.tolist(), predicted.tolist())]
    return csv_text(rows, ["actual", "predicted"])


def latency_plot(lat: dict[str, dict[str, Any]], batch_sizes: list[int]) -> str:
    """CSV of median latency per model and batch size (``dvc plots diff plots/latency.csv``)."""
    rows = [{"model": name, "runtime": r.get("runtime", ""), **{f"b{b}_ms": r.get(f"latency_b{b}_ms") for b in batch_sizes}}
            for name, r in lat.items() if not name.startswith("_") and name != "shipped"]
    return csv_text(rows, ["model", "runtime", *(f"b{b}_ms" for b in batch_sizes)])


def run(params: Params, *, data: str, models: str, metrics: str, table: str, latency: str, plots: str,
        report: str, predictions: str, live: str, charts: str, shipped: str) -> str:
    """The evaluate stage: compare every model, choose what ships, write every output; returns report.md's text.

    Everything is computed before anything is written, so a failure leaves the previous outputs alone.

    Args:
        params: reads ``prune.rounds``, ``quantize.models`` and ``evaluate``.
        data: the prepared data folder.
        models: the folder of ``<name>.pt`` (with ``<name>.run.json``) and ``quantized/`` artifacts.
        metrics: summary.json (``headline``); table: evaluate.json (every row); latency: latency.json.
        plots: folder for the plot CSVs; report: report.md; predictions: predictions.csv.
        live: the dvclive folder of teacher/student/distill (training curves); charts: folder of PNG charts.
        shipped: folder for the shipped artifact (``model.onnx``, ``model.json``).
    """
    p, rounds, quantized = params.evaluate, list(params.prune.rounds), params.quantized_models
    meta = load_meta(data)
    with tempfile.TemporaryDirectory(prefix="shrink-evaluate-") as tmp:  # the ORT fp32 exports: timed, not kept
        entries = collect(Path(models), params.fp32_models, quantized, p.threads, Path(tmp))
        test = load_split(data, "test")
        ev, lat, _ = compare(entries, test, meta, p, val=load_split(data, "val"))
        ship = None
        sources = [m for m in quantized if m in (REFERENCE_MODEL, *rounds)]  # the unpruned student and every round
        if sources:
            name, rule, verdicts = choose_shipped(ev, lat, sources, p)
            ev["shipped"], lat["shipped"] = shipped_sections(name, rule, verdicts, entries, ev, lat, p)
            ship = next(e for e in entries if e.name == name)
        rows = {k: v for k, v in ev.items() if k != "shipped"}
        # each model's run details (width, accuracy right after the cut, MACs): the file beside its checkpoint
        runs = {name: read_json(Path(models) / f"{name}.run.json") for name in (REFERENCE_MODEL, *rounds)}
        macs = runs[ship.source].get("macs") if ship else None
        summary = headline(ev, macs)
        text = "# shrink report\n\n" + report_markdown(rows, lat, p, ev.get("shipped"))
        if ship:
            t = lat["shipped"]
            ratios = ", ".join(f"{t[f'speedup_b{b}_vs_{REFERENCE}']:.2f}x at batch {b}" for b in p.batch_sizes
                               if f"speedup_b{b}_vs_{REFERENCE}" in t)
            text += (f"\nShipped as `{shipped}/model.onnx` (+ `model.json`), {macs or 0:,} MACs per image"
                     + (f"; median speed against `{REFERENCE}`: {ratios}" if ratios else "") + ".\n")
        text += prepare_counts_markdown(Path(data))
        csv_predictions = "Id,Category\n"  # no unlabeled split in this dataset: header only
        if "evaluation" in meta["splits"] and ship:
            evaluation = load_split(data, "evaluation")
            csv_predictions = predictions_csv(evaluation.ids, predict_classes(ship.run, evaluation.images,
                                                                              normalizer(meta)))
            text += (f"\n`{predictions}`: {len(evaluation.ids)} predictions of the unlabeled evaluation split "
                     f"by `{ship.name}`.\n")
        confusion = None
        if ship:
            confusion = confusion_csv(meta["classes"], test.labels, predict_classes(ship.run, test.images,
                                                                                    normalizer(meta)))
        prune_csv = prune_plot(rows, runs, ship.kind if ship else None)
        curves = read_live_curves(live)
        if ship:
            write_shipped(ship, shipped)

    write_json(summary, metrics)
    write_json(ev, table)
    write_json(lat, latency)
    write_text(models_plot(rows), Path(plots) / "models.csv")
    write_text(prune_csv, Path(plots) / "prune.csv")
    write_text(latency_plot(lat, p.batch_sizes), Path(plots) / "latency.csv")
    write_text(confusion or "actual,predicted\n", Path(plots) / "confusion.csv")
    write_text(csv_predictions, predictions)
    text += "\n" + write_charts(ev, lat, csv_rows(prune_csv), curves, charts, Path(report).parent,
                                shipped=ship.name if ship else None, batch_sizes=p.batch_sizes,
                                confusion_rows=csv_rows(confusion) if confusion else None,
                                classes=meta["classes"])
    write_text(text, report)
    return text


def prepare_counts_markdown(data: Path) -> str:
    """Images per split and class (the prepare stage's ``<prepared>/prepare.json``), as markdown."""
    path = data / "prepare.json"
    if not path.is_file():
        return ""
    counts = read_json(path)
    per_class = counts.get("per_class", {})
    splits = list(per_class)
    classes = list(dict.fromkeys(c for s in splits for c in per_class[s]))
    lines = ["", "## Data", "", "| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    lines += [f"| {c} | " + " | ".join(str(per_class[s].get(c, 0)) for s in splits) + " |" for c in classes]
    skipped = counts.get("skipped")
    if skipped and any(skipped.values()):
        lines += ["", "Skipped (unreadable, `data.skip_bad`): " + ", ".join(
            f"{f}" for files in counts.get("skipped_files", {}).values() for f in files)]
    return "\n".join(lines) + "\n"
