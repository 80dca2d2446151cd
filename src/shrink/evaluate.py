"""The evaluate stage: measure every model the pipeline made, choose what ships, export it, write the report.

``run`` is the stage (``stages/evaluate.py``), in four steps, each a module of its own:

1. ``shrink.measure``: every fp32 checkpoint in PyTorch eager and in ORT fp32 (``<model>.ort``), and every
   quantized artifact, with its validation and test accuracy, bytes and CPU latency;
2. ``shrink.ship``: what ships, by ``evaluate.objective`` (``smallest_fast`` by default, ``most_accurate`` the
   course's), among the artifacts of the unpruned distilled student and of the control (those
   ``quantize.models`` lists, both by default), of every prune round and of the rounds' from-scratch twins
   ``quantize.models`` lists (none by default), decided on validation against
   ``evaluate.reference`` (the control by default) at ``evaluate.confidence`` (``decide``);
3. ``write_shipped``: the shipped artifact to a stable place, ``shipped/model.onnx`` with
   ``shipped/model.json`` (classes, input size, normalisation, kind), whichever kind won; dvc.yaml declares
   it as the ``artifacts:`` entry ``shrink-classifier``;
4. ``shrink.report``: report.md (with what each step bought: ``steps``), the plot CSVs (``plots/confusion.csv``: the shipped model's (actual,
   predicted) class on every test image), predictions.csv (the course's submission) and the metrics files.

Figures split in three files so that ``dvc metrics diff`` and ``dvc exp show`` show what a change did:

* ``metrics/summary.json`` — the stage's only metrics file (``headline``): the shipped artifact's name,
  bytes, validation and test accuracy, MACs per image, and its test accuracy against teacher, student,
  ``distill`` and ``control``, each a paired difference with its 95 % interval over the test images (every
  round's figures are in ``plots/prune.csv``, the trade-off curve). Deterministic: a rerun with the same
  inputs gives the same file, so a diff lists only what a change caused;
* ``metrics/evaluate.json`` — a plain output, every row: kind, runtime, validation and test accuracy,
  parameters, bytes, size ratio and accuracy change against the teacher and against the fp32 source, and
  the ``shipped`` section (artifact, kind, bytes, accuracy against its fp32 parent, the rule used);
* ``metrics/latency.json`` — a plain output, timings (noisy by nature): min and median batch-1 / batch-64
  latency, speed ratios against the teacher and against ``distill.ort`` (the unpruned student in ORT fp32),
  all measured in the same run, and the shipped artifact's timings, its two speed ratios and the verdicts.
  Not a metrics file, because every rerun measures every figure again: diff it on request with
  ``git diff metrics/latency.json`` or ``dvc plots diff plots/latency.csv``.

No test label decides anything (a test permutes them): the test accuracy of what ships is reported, as the
test split is there for.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .charts import csv_rows, read_live_curves, write_charts
from .config import CONTROL, EvaluateParams, Params, RoundParams, scratch_model
from .data import Split, load_meta, load_split, normalizer
from .formats import tie_order
from .io import atomic_path, read_json, write_json, write_text
from .measure import BATCH, Entry, Measured, collect, compare, ship_table
from .quantize import export_onnx
from .report import (confusion_csv, headline, latency_plot, models_plot, predictions_csv, prepare_counts_markdown,
                     probes_markdown, prune_plot, report_markdown, screen_markdown, shipped_markdown, shipped_sections,
                     steps_markdown)
from .search import PROBES, resolve, within
from .ship import Terms, choose
from .stats import Paired
from .train import predict_logits

UNPRUNED = "distill"  # the unpruned student: round 0 of the trade-off (plots/prune.csv)
REFERENCE = f"{UNPRUNED}.ort"  # it in ORT fp32: the speed reference, what every speed ratio is against
UNPRUNED_MODELS = ("teacher", "student", UNPRUNED, CONTROL)  # what the shipped artifact is compared with


def ship_terms(p: EvaluateParams) -> Terms:
    """What the ship objective is asked: the pipeline's references (accuracy: ``evaluate.reference``), the
    formats' tie order, ``evaluate``'s bounds and confidence."""
    return Terms(p.reference, REFERENCE, tie_order(), p.max_drop, p.max_bytes, p.batch_sizes,
                 None if p.ship == "auto" else p.ship, p.confidence)


def ship_sources(params: Params) -> list[str]:
    """The models whose artifacts may ship: the unpruned ones in ``quantize.models`` (the reference first, so
    that it wins a tie in size with the other), then every round, then the rounds' from-scratch twins that
    ``quantize.models`` lists (after the rounds: a round wins a tie with its own architecture)."""
    rounds = list(params.prune.rounds)
    unpruned = [m for m in params.quantized_models if m in (UNPRUNED, CONTROL)]
    twins = [scratch_model(r) for r in params.prune.scratch if scratch_model(r) in params.quantize.models]
    return sorted(unpruned, key=lambda m: m != params.evaluate.reference) + rounds + twins


def decide(entries: list[Entry], m: Measured, sources: list[str], p: EvaluateParams) -> Entry:
    """Choose what ships among the artifacts of ``sources`` (``ship.choose`` by ``evaluate.objective``), record
    it in the ``shipped`` sections of ``m.ev`` and ``m.lat`` (with its test difference to every unpruned model),
    say on stderr when the decision split is too small for the rule, and return its row."""
    choice = choose(ship_table(entries, m, p.batch_sizes), sources, ship_terms(p), p.objective)
    if choice.note:
        print(f"evaluate: warning: {choice.note} (docs/troubleshooting.md)", file=sys.stderr)
    entry = next(e for e in entries if e.name == choice.name)
    m.ev["shipped"], m.lat["shipped"] = shipped_sections(choice, entry, m.ev, m.lat, p, p.reference, REFERENCE,
                                                         against_unpruned(m, choice.name))
    return entry


def against_unpruned(m: Measured, name: str) -> dict[str, Paired]:
    """Row ``name`` minus each unpruned model (teacher, student, distill, control) on the test images."""
    return {u: m.on_test(name, u) for u in UNPRUNED_MODELS if u in m.test_correct}


def steps(m: Measured, params: Params, ship: Entry | None, rounds: dict[str, RoundParams] | None = None
          ) -> list[tuple[str, str, str, Paired]]:
    """What each step bought, on the test images: KD (distill - student), the control's fine-tuning (control -
    its parent), each round's cut (round - control: the same budget, without the cut), inheriting the cut's
    weights (round - its architecture trained from scratch, for the rounds in ``prune.scratch``), and quantizing
    (the shipped artifact - its fp32 network). Only the rows measured. ``rounds``: the rounds with their widths
    resolved (``search.resolve``; default params.yaml's)."""
    c = params.prune.control
    pairs = [("KD", UNPRUNED, "student"),
             (f"{c.epochs} more epoch{'' if c.epochs == 1 else 's'} of fine-tuning (the control)", CONTROL, c.parent)]
    pairs += [(f"the cut to width {r.width:g}, against the control", name, CONTROL)
              for name, r in (rounds or params.prune.rounds).items()]
    pairs += [(f"inheriting the cut's weights: {name} against its architecture trained from scratch for as many "
               f"epochs", name, scratch_model(name)) for name in params.prune.scratch]
    if ship is not None and ship.source:
        pairs.append(("quantizing the shipped artifact", ship.name, ship.source))
    return [(what, a, b, m.on_test(a, b)) for what, a, b in pairs if a in m.test_correct and b in m.test_correct]


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


def shipped_predictions(ship: Entry | None, test: Split, data: str, meta: dict[str, Any],
                        predictions: str) -> tuple[str, str, str]:
    """(plots/confusion.csv, predictions.csv, report.md's line about it) from the shipped artifact's classes of
    the test split and of the unlabeled evaluation split; headers alone when nothing ships or there is none."""
    confusion, submission, note = "actual,predicted\n", "Id,Category\n", ""
    if ship is None:
        return confusion, submission, note
    norm = normalizer(meta)
    pred = predict_logits(ship.run, test.images, norm, BATCH).argmax(1)
    confusion = confusion_csv(meta["classes"], test.labels, pred)
    if "evaluation" in meta["splits"]:
        evaluation = load_split(data, "evaluation")
        pred = predict_logits(ship.run, evaluation.images, norm, BATCH).argmax(1)
        submission = predictions_csv(evaluation.ids, pred)
        note = (f"\n`{predictions}`: {len(evaluation.ids)} predictions of the unlabeled evaluation split "
                f"by `{ship.name}`.\n")
    return confusion, submission, note


def run(params: Params, *, data: str, models: str, metrics: str, table: str, latency: str, plots: str,
        report: str, predictions: str, live: str, charts: str, shipped: str, plan: str | None = None,
        curve: str | None = None) -> str:
    """The evaluate stage: compare every model, choose what ships, write every output; returns report.md's text.

    Everything is computed before anything is written, so a failure leaves the previous outputs alone.

    Args:
        params: reads ``prune.rounds``, ``prune.control``, ``prune.scratch``, ``quantize.models`` and ``evaluate``.
        data: the prepared data folder.
        models: the folder of ``<name>.pt`` (with ``<name>.run.json``) and ``quantized/`` artifacts.
        metrics: summary.json (``headline``); table: evaluate.json (every row); latency: latency.json.
        plots: folder for the plot CSVs; report: report.md; predictions: predictions.csv.
        live: the dvclive folder of teacher/student/distill (training curves); charts: folder of PNG charts.
        shipped: folder for the shipped artifact (``model.onnx``, ``model.json``).
        plan, curve: the knee search's plan folder (the widths of rounds of width auto) and screen curve (the
            report's knee-search section and chart); optional when every round's width is fixed.
    """
    widths = resolve(params.prune.rounds, plan)
    screened = read_json(curve) if curve and Path(curve).is_file() else None
    p, rounds, meta = params.evaluate, list(params.prune.rounds), load_meta(data)
    sources = ship_sources(params)
    with tempfile.TemporaryDirectory(prefix="shrink-evaluate-") as tmp:  # the ORT fp32 exports: timed, not kept
        entries = collect(Path(models), params.fp32_models, params.quantized_models, p.threads, Path(tmp))
        test = load_split(data, "test")
        m = compare(entries, test, meta, p, load_split(data, "val"), REFERENCE)
        ship = decide(entries, m, sources, p) if sources else None
        rows = {k: v for k, v in m.ev.items() if k != "shipped"}
        # each model's run details (width, accuracy right after the cut, MACs): the file beside its checkpoint
        runs = {name: read_json(Path(models) / f"{name}.run.json") for name in (UNPRUNED, CONTROL, *rounds)}
        # the shipped network's MACs, from its own run.json (a round's from-scratch twin may ship too)
        macs = read_json(Path(models) / f"{ship.source}.run.json").get("macs") if ship else None
        runs.pop(CONTROL)  # the trade-off's rounds: the unpruned student, then the rounds
        probes = [{**r[PROBES][-1], "passes": within(r[PROBES][-1], p.max_drop, p.confidence)}
                  for n, r in runs.items() if n in rounds and r.get(PROBES)]  # each round's own, in params' order
        text = "# shrink report\n\n" + report_markdown(rows, m.lat, p.batch_sizes, m.ev.get("shipped"), REFERENCE)
        text += shipped_markdown(m.lat["shipped"], shipped, macs, p.batch_sizes, REFERENCE) if ship else ""
        text += steps_markdown(steps(m, params, ship, widths), against_unpruned(m, ship.name) if ship else {})
        confusion, submission, note = shipped_predictions(ship, test, data, meta, predictions)
        text += probes_markdown(probes, p.max_drop, p.confidence) + screen_markdown(screened, p.max_drop,
                                                                                     p.confidence)
        text += prepare_counts_markdown(Path(data)) + note
        prune_csv = prune_plot(rows, runs, ship.kind if ship else None)
        curves = read_live_curves(live)
        if ship:
            write_shipped(ship, shipped)
    for path, content in ((metrics, headline(m.ev, macs)), (table, m.ev), (latency, m.lat),
                          (Path(plots) / "models.csv", models_plot(rows)), (Path(plots) / "prune.csv", prune_csv),
                          (Path(plots) / "latency.csv", latency_plot(m.lat, p.batch_sizes)),
                          (Path(plots) / "confusion.csv", confusion), (predictions, submission)):
        (write_json if isinstance(content, dict) else write_text)(content, path)
    text += "\n" + write_charts(m.ev, m.lat, csv_rows(prune_csv), curves, charts, Path(report).parent,
                                shipped=ship.name if ship else None, batch_sizes=p.batch_sizes,
                                confusion_rows=csv_rows(confusion) if ship else None, classes=meta["classes"],
                                knee_args=(probes, p.max_drop, m.ev.get(f"{CONTROL}.int8w", {}).get("bytes"),
                                           screened))
    write_text(text, report)
    return text
