"""What the evaluate stage writes, as text: report.md, the plot CSVs, predictions.csv and the metrics' sections.

Every function here is a function of plain data (the rows of ``metrics/evaluate.json`` and
``metrics/latency.json``, the ``<model>.run.json`` files, predicted classes), so each output can be tested
without a pipeline run; ``shrink.evaluate.run`` computes the data and writes the files.

* ``report_markdown``: the comparison table of every model and runtime, how it was timed, and what ships;
* ``steps_markdown``: what each step bought (KD, the control's fine-tuning, each cut, quantizing) and the shipped
  artifact against every unpruned model, each a paired difference on the test images with its interval
  (``stats.Paired``), called a gain or a loss only when the interval excludes zero;
* ``shipped_sections``: the ``shipped`` sections of evaluate.json (deterministic) and latency.json (timings);
* ``headline``: ``metrics/summary.json``, the stage's only metrics file;
* ``models_plot``, ``prune_plot``, ``latency_plot``, ``confusion_csv``: ``plots/*.csv``;
* ``predictions_csv``: the course's submission format (``Id,Category``);
* ``prepare_counts_markdown``: images per split and class.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import EvaluateParams
from .io import read_json
from .search import bracket, within
from .ship import Choice
from .stats import Paired, lower_bound_counts

if TYPE_CHECKING:  # type hints only: the report is text from plain data
    import torch

    from .measure import Entry


def rule_name(p: EvaluateParams) -> str:
    """The rule's *name* for evaluate.json (which branch applied depends on the timings: latency.json)."""
    name = "auto" if p.ship == "auto" else f"evaluate.ship = {p.ship}"
    if p.objective != "smallest_fast":  # the default objective stays implicit, so its sections read as always
        name = f"evaluate.objective = {p.objective}" + ("" if p.ship == "auto" else f", {name}")
    return name


def shipped_sections(choice: Choice, entry: Entry, ev: dict, lat: dict, p: EvaluateParams, reference: str,
                     speed_reference: str | None, test_vs: dict[str, Paired] | None = None,
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``shipped`` sections of evaluate.json (deterministic) and latency.json (timings).

    Args:
        choice: what ``ship.choose`` chose; entry: its row.
        ev, lat: every row of evaluate.json and latency.json.
        reference: the accuracy reference (``evaluate.reference``); speed_reference: the speed one
            (``distill.ort``).
        test_vs: model -> the shipped artifact minus that model on the test images, with its interval.
    """
    name = choice.name
    det = {"name": name, "artifact": str(entry.run.path), "kind": entry.kind, "runtime": entry.run.label,
           "bytes": entry.bytes, "val_acc": ev[name]["val_acc"], "test_acc": ev[name]["test_acc"],
           "parent": entry.source, "acc_vs_parent": ev[name].get("acc_vs_source"), "reference": reference,
           "test_acc_vs_reference": round(ev[name]["test_acc"] - ev[reference]["test_acc"], 6),
           "test_vs": {m: vs_dict(d) for m, d in (test_vs or {}).items()},
           "rule": rule_name(p)}
    if choice.note:
        det["note"] = choice.note
    timing: dict[str, Any] = {"name": name, "latency_rule_applied": choice.rule}
    ref = speed_reference if speed_reference in lat else None
    for b in p.batch_sizes:
        timing[f"latency_b{b}_ms"] = lat[name][f"latency_b{b}_ms"]
        timing[f"min_b{b}_ms"] = lat[name][f"min_b{b}_ms"]
        if ref:
            timing[f"speedup_b{b}_vs_{ref}"] = lat[name][f"speedup_b{b}_vs_{ref}"]
            timing[f"speedup_min_b{b}_vs_{ref}"] = round(lat[ref][f"min_b{b}_ms"] / lat[name][f"min_b{b}_ms"], 3)
    timing["latency_verdicts"] = choice.verdicts  # each candidate's verdicts, and how far from the fastest
    return det, timing


def report_markdown(ev: dict, lat: dict, batch_sizes: list[int], shipped: dict[str, Any] | None = None,
                    reference: str | None = None) -> str:
    """The comparison table of every model (each row names its runtime), as markdown.

    Args:
        ev, lat: every row of evaluate.json and latency.json; shipped: evaluate.json's ``shipped`` section.
        reference: the row whose speed ratios get their own columns (``distill.ort``), when measured.
    """
    bs = batch_sizes
    ref = reference if reference in lat else None
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
        ref = shipped["reference"]
        vs = shipped.get("test_vs", {}).get(ref)
        delta = (f"{vs['text']} vs `{ref}`, {vs['verdict']}" if vs else
                 f"{shipped['test_acc_vs_reference'] * 100:+.2f} pt vs `{ref}`")
        lines += ["", f"**Shipped:** `{shipped['artifact']}` ({shipped['kind']}, {shipped['runtime']}, "
                      f"{shipped['bytes']:,} B, val acc {shipped['val_acc']:.4f}, test acc {shipped['test_acc']:.4f}: "
                      f"{delta}). Rule: {shipped['rule']} (the branch applied is in `metrics/latency.json`)."]
        if shipped.get("note"):
            lines += ["", f"> **Note:** {shipped['note']}."]
    return "\n".join(lines) + "\n"


def vs_dict(d: Paired) -> dict[str, Any]:
    """A paired comparison for evaluate.json: its rounded figures and its text (``Paired.text``) from the unrounded
    ones, so the report prints one interval the same way everywhere (re-rounding -0.30504 via -0.305 gives -0.30)."""
    return {**d.as_dict(), "text": d.text()}


def steps_markdown(steps: list[tuple[str, str, str, Paired]], test_vs: dict[str, Paired]) -> str:
    """What each step bought and where the shipped artifact stands, on the test split, as markdown.

    Args:
        steps: (what the step is, model a, model b, a - b on the test images) per step, in pipeline order.
        test_vs: model -> the shipped artifact minus that model on the test images.
    """
    conf = next(iter([*test_vs.values(), *(d for *_, d in steps)]), None)
    if conf is None:
        return ""
    lines = ["", f"## What each step bought (test split, paired {conf.confidence:.0%} intervals)", "",
             "A difference is a gain or a loss only when its interval excludes zero; otherwise it is within noise.", ""]
    lines += [f"- {what} (`{a}` − `{b}`): {d.text()}, {d.verdict}" for what, a, b, d in steps]
    if test_vs:
        lines += ["", "The shipped artifact against " + ", ".join(f"`{m}` {d.text()} ({d.verdict})"
                                                               for m, d in test_vs.items()) + "."]
    return "\n".join(lines) + "\n"


def probes_markdown(probes: list[dict[str, Any]], max_drop: float, confidence: float) -> str:
    """The knee search as a table: each round's probe in the order the rounds ran (validation, after its full
    fine-tune, paired with the control), and the bracket it found. Empty without a probe."""
    if not probes:
        return ""
    lines = ["", "## The knee search (validation; each round fully fine-tuned, against the control)", "",
             f"| # | round | width | params | int8w bytes | val acc | vs control | lower bound ({confidence:.0%}) | "
             f"within {max_drop:g} pt |", "|---|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(probes, 1):
        low = lower_bound_counts(p["val_n"], p["val_only_cut"], p["val_only_uncut"], confidence)
        lines.append(f"| {i} | `{p['round']}` | {p['width']:g} | {p['params']:,} | {p['int8w_bytes']:,} | "
                     f"{p['val_acc']:.4f} | {(p['val_acc'] - p['control_val_acc']) * 100:+.2f} pt | {low:+.2f} pt | "
                     f"{'yes' if within(p, max_drop, confidence) else 'no'} |")
    low, high = bracket(probes, max_drop, confidence)
    knee = (f"the narrowest width within is {low:g}" if low < 1 else "no width was within")
    knee += f", the widest narrower one not within {high:g}" if high > 0 else ", and none narrower failed"
    lines += ["", f"Bracket: {knee}. Each round after the first bisects the ladder between the two (the rule is "
                  "the ship rule's own test); the ship rule then reads every artifact against the control."]
    return "\n".join(lines) + "\n"


def screen_markdown(curve: dict[str, Any] | None, max_drop: float, confidence: float) -> str:
    """The knee search's optional screen as a table: each screened width against the uncut parent fine-tuned alike
    (on validation). Empty without a screen."""
    if not curve or not curve.get("curve"):
        return ""
    ref = curve["reference"]
    lines = ["", f"## The screen (validation; each cut and the uncut `{curve['parent']}` fine-tuned "
                 f"{curve['epochs']} epoch{'' if curve['epochs'] == 1 else 's'})", "",
             f"| width | params | int8w bytes | val acc | vs uncut | lower bound ({confidence:.0%}) | within "
             f"{max_drop:g} pt |",
             "|---|---|---|---|---|---|---|",
             f"| 1 (uncut) | {ref['params']:,} | {ref['int8w_bytes']:,} | {ref['val_acc']:.4f} | | | |"]
    for r in curve["curve"]:
        low = lower_bound_counts(r["val_n"], r["val_only_cut"], r["val_only_uncut"], confidence)
        lines.append(f"| {r['width']:g} | {r['params']:,} | {r['int8w_bytes']:,} | {r['val_acc']:.4f} | "
                     f"{(r['val_acc'] - ref['val_acc']) * 100:+.2f} pt | {low:+.2f} pt | "
                     f"{'yes' if within(r, max_drop, confidence) else 'no'} |")
    lines += ["", "Within: the ship rule's own test, with the uncut parent in the control's place. The first auto "
                  "round probes the last width within (the crossing); the rounds then decide."]
    return "\n".join(lines) + "\n"


def shipped_markdown(timing: dict[str, Any], folder: str, macs: int | None, batch_sizes: list[int],
                     reference: str | None) -> str:
    """Where the shipped model went, its MACs per image and its median speed against ``reference``.

    Args:
        timing: latency.json's ``shipped`` section; folder: the shipped folder.
    """
    ratios = ", ".join(f"{timing[f'speedup_b{b}_vs_{reference}']:.2f}x at batch {b}" for b in batch_sizes
                       if f"speedup_b{b}_vs_{reference}" in timing)
    return (f"\nShipped as `{folder}/model.onnx` (+ `model.json`), {macs or 0:,} MACs per image"
            + (f"; median speed against `{reference}`: {ratios}" if ratios else "") + ".\n")


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


def prune_plot(ev: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]], kind: str | None) -> str:
    """CSV of the trade-off over the rounds (``plots/prune.csv``); round 0 is the unpruned model (``runs``' first).

    One row per model: its width, parameters, MACs per image, and its ``kind`` artifact (the shipped
    artifact's kind): bytes, validation and test accuracy; ``fp32_test_acc`` is the checkpoint's own.
    Without an artifact of that kind (e.g. the unpruned model not in ``quantize.models``) the row has the fp32
    checkpoint's figures and its state_dict bytes.

    Args:
        ev: every row (``metrics/evaluate.json``).
        runs: ``<model>.run.json`` of the unpruned model and of every round, in pipeline order.
        kind: the shipped artifact's kind (None: the fp32 rows).
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
    deterministic (every round's figures are in ``plots/prune.csv`` and ``metrics/evaluate.json``), with its
    test-accuracy difference to each unpruned model (``vs``: points and the paired interval).

    Args:
        ev: every row and the ``shipped`` section (``metrics/evaluate.json``).
        macs: multiply-accumulates per image of the shipped artifact's network (its fp32 parent's).
    """
    if "shipped" not in ev:
        return {}
    s = ev["shipped"]
    # the test-accuracy difference to each unpruned model, in points, with its paired interval: 3 columns each
    vs = {m: {"pt": d["diff_pt"], "low": d["low_pt"], "high": d["high_pt"]} for m, d in s.get("test_vs", {}).items()}
    return {"shipped": {"name": s["name"], "bytes": s["bytes"], "val_acc": s["val_acc"], "test_acc": s["test_acc"],
                        "macs": macs, "vs": vs}}


def confusion_csv(classes: list[str], actual: torch.Tensor, predicted: torch.Tensor) -> str:
    """``actual,predicted`` class names, one row per test image (DVC's ``confusion`` plot template)."""
    rows = [{"actual": classes[a], "predicted": classes[b]} for a, b in zip(actual.tolist(), predicted.tolist())]
    return csv_text(rows, ["actual", "predicted"])


def latency_plot(lat: dict[str, dict[str, Any]], batch_sizes: list[int]) -> str:
    """CSV of median latency per model and batch size (``dvc plots diff plots/latency.csv``)."""
    rows = [{"model": name, "runtime": r.get("runtime", ""), **{f"b{b}_ms": r.get(f"latency_b{b}_ms") for b in batch_sizes}}
            for name, r in lat.items() if not name.startswith("_") and name != "shipped"]
    return csv_text(rows, ["model", "runtime", *(f"b{b}_ms" for b in batch_sizes)])


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
