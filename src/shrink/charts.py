"""The report's pictures: PNG charts that ``evaluate`` writes beside ``report.md`` and embeds in it.

Each chart is a function of plain data (the dicts of ``metrics/evaluate.json`` and ``metrics/latency.json``,
the rows of ``plots/prune.csv``, the dvclive training curves), so it can be tested without a pipeline run.
Rendering is deterministic where the data are: matplotlib's Agg canvas, matplotlib's default style (not the
user's matplotlibrc), a fixed size and dpi, and no "Software" version stamp in the PNG, so the same data give
the same bytes (``latency.png`` changes with every run, as the timings do).
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable

import functools

import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, StrMethodFormatter

from .formats import get_format, list_formats
from .io import atomic_path

SIZE = (8.0, 4.8)  # inches
DPI = 100
FP32_STYLE = ("o", "tab:blue")  # (marker, colour) of the fp32 rows; each format has its own (shrink.formats)
COURSE_LIMIT = 300_000  # bytes: the course's limit for the 8-bit model
CHARTS = {  # file name -> caption in report.md
    "tradeoff.png": "The trade-off over the prune rounds: test accuracy against bytes and MACs",
    "acc_vs_bytes.png": "Test accuracy against bytes on disk",
    "prune_rounds.png": "Accuracy and parameters per prune round",
    "latency.png": "CPU latency per model and runtime",
    "training_curves.png": "Training curves",
    "confusion.png": "Confusion matrix of the shipped model on the test split",
    "knee.png": "The knee search: each round's validation accuracy against its int8w bytes, in the order they ran",
}


def kind_style(kind: str) -> tuple[str, str]:
    """(marker, colour) of an artifact kind: fp32's, a format's own, or a grey cross for an unknown kind."""
    if kind == "fp32":
        return FP32_STYLE
    return (get_format(kind).marker, get_format(kind).colour) if kind in list_formats() else ("x", "tab:gray")


def styled(fn):
    """Run ``fn`` under matplotlib's default style: artists read rcParams when they are made, and a
    user's matplotlibrc must not change the pictures."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.style.context("default"):
            return fn(*args, **kwargs)
    return wrapper


def new_figure(ncols: int = 1) -> tuple[Figure, list]:
    # a bare Figure (no pyplot): no global figure registry, and savefig renders with the Agg canvas
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


@styled
def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes; no version stamp, so identical data give identical bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def model_rows(ev: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-model rows of ``metrics/evaluate.json`` (skips sections such as ``shipped``)."""
    return {k: r for k, r in ev.items() if isinstance(r, dict) and "test_acc" in r and "bytes" in r}


def shipped_name(ev: dict[str, Any], shipped: str | None = None) -> str | None:
    """The model name of the shipped artifact: ``shipped`` if given, else ``ev["shipped"]["artifact"]``
    (a model name or an artifact path such as ``models/quantized/prune_5.uint8.pt``)."""
    if shipped is None:
        section = ev.get("shipped")
        shipped = section.get("artifact") if isinstance(section, dict) else None
    if shipped is None:
        return None
    rows = model_rows(ev)
    if shipped in rows:
        return shipped
    stem = Path(shipped).name.rsplit(".", 1)[0]  # prune_5.uint8.pt -> prune_5.uint8
    if stem in rows:
        return stem
    fp32 = Path(shipped).stem  # models/distill.pt -> distill
    if fp32 in rows:
        return fp32
    raise ValueError(f"shipped artifact {shipped!r} is none of the evaluated models ({', '.join(rows)})")


@styled
def accuracy_vs_bytes(ev: dict[str, Any], shipped: str | None = None) -> Figure:
    """Scatter of test accuracy against bytes on disk (log x), one point per model and artifact.

    Args:
        ev: ``metrics/evaluate.json``: model -> {kind, test_acc, bytes, ...}.
        shipped: name of the shipped artifact, ringed in the chart (default: from ``ev["shipped"]``).
    """
    rows = model_rows(ev)
    ship = shipped_name(ev, shipped)
    fig, (ax,) = new_figure()
    kinds = list(dict.fromkeys(r["kind"] for r in rows.values()))
    for kind in kinds:
        marker, colour = kind_style(kind)
        pts = [(r["bytes"], r["test_acc"]) for r in rows.values() if r["kind"] == kind]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour, s=40, label=kind, zorder=3)
    for i, (name, r) in enumerate(sorted(rows.items(), key=lambda kv: kv[1]["bytes"])):
        # alternate above/below along x, so names of neighbouring points overlap less
        ax.annotate(name, (r["bytes"], r["test_acc"]), xytext=(4, 4 if i % 2 == 0 else -11),
                    textcoords="offset points", fontsize=7)
    if ship is not None:
        r = rows[ship]
        ax.scatter([r["bytes"]], [r["test_acc"]], s=260, facecolors="none", edgecolors="black", linewidths=1.5,
                   label=f"shipped: {ship}", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("bytes on disk (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy vs bytes on disk")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _float(v: Any) -> float:
    return float(v) if v not in (None, "") else math.nan


@styled
def tradeoff(rows: list[dict[str, Any]], shipped: str | None = None, limit: int = COURSE_LIMIT) -> Figure:
    """Test accuracy against bytes on disk (log x) and against MACs per image, one point per round.

    Args:
        rows: the rows of ``plots/prune.csv`` (round, model, kind, bytes, macs, test_acc); round 0 is the
            unpruned student. Values may be strings, as read from the CSV.
        shipped: the shipped artifact's name (``<model>.<kind>``), ringed in both panels.
        limit: a vertical line at this many bytes (the course's 300,000-byte limit).
    """
    if not rows:
        raise ValueError("tradeoff: no rows (plots/prune.csv is empty)")
    fig, (by_ax, mac_ax) = new_figure(2)
    acc = [_float(r["test_acc"]) for r in rows]
    kind = rows[-1].get("kind", "")
    for ax, field, label in ((by_ax, "bytes", f"bytes on disk of the {kind} artifact (log scale)"),
                             (mac_ax, "macs", "MACs per image")):
        x = [_float(r.get(field)) for r in rows]
        ax.plot(x, acc, marker="o", color="tab:purple", label="prune rounds", zorder=2)
        ax.scatter(x[:1], acc[:1], marker="s", s=70, color="tab:blue", label=f"unpruned: {rows[0]['model']}", zorder=3)
        for r, xi, yi in zip(rows, x, acc):
            ax.annotate(str(r["round"]), (xi, yi), xytext=(3, 4), textcoords="offset points", fontsize=7)
        ship = next((i for i, r in enumerate(rows) if f"{r['model']}.{r.get('kind')}" == shipped), None)
        if ship is not None:
            ax.scatter([x[ship]], [acc[ship]], s=260, facecolors="none", edgecolors="black", linewidths=1.5,
                       label=f"shipped: {shipped}", zorder=4)
        if field == "bytes":
            ax.axvline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"course limit {limit:,} B")
        if field == "bytes":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
        else:  # MACs span less than a decade: a linear axis with readable numbers
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    by_ax.set_ylabel("test accuracy")
    by_ax.set_title("Accuracy vs bytes (numbers: round)")
    mac_ax.set_title("Accuracy vs compute")
    by_ax.legend(fontsize=7, loc="best")
    return fig


@styled
def prune_rounds(rows: list[dict[str, Any]]) -> Figure:
    """Accuracy (test, and validation right after the cut) and parameters per prune round.

    Args:
        rows: the rows of ``plots/prune.csv`` (round, model, params, test_acc, val_acc_after_cut);
            round 0 is the unpruned parent. Values may be strings, as read from the CSV.
    """
    if not rows:
        raise ValueError("prune_rounds: no rows (plots/prune.csv is empty)")
    rounds = [int(r["round"]) for r in rows]
    fig, (acc_ax, par_ax) = new_figure(2)
    acc_ax.plot(rounds, [_float(r["test_acc"]) for r in rows], marker="o", label="test acc (after fine-tuning)")
    cut = [(i, _float(r.get("val_acc_after_cut"))) for i, r in zip(rounds, rows)]
    cut = [(i, v) for i, v in cut if not math.isnan(v)]
    if cut:
        acc_ax.plot([c[0] for c in cut], [c[1] for c in cut], marker="s", linestyle="--", label="val acc right after the cut")
    acc_ax.set_xlabel("prune round (0 = unpruned)")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_title("Accuracy per round")
    acc_ax.set_xticks(rounds)
    acc_ax.grid(True, alpha=0.3)
    acc_ax.legend(fontsize=8)
    par_ax.bar(rounds, [int(float(r["params"])) for r in rows], color="tab:gray")
    par_ax.set_xlabel("prune round (0 = unpruned)")
    par_ax.set_ylabel("parameters")
    par_ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    par_ax.set_title("Parameters per round")
    par_ax.set_xticks(rounds)
    par_ax.grid(True, axis="y", alpha=0.3)
    return fig


def knee(probes: list[dict[str, Any]], max_drop: float, control_bytes: int | None = None,
         curve: dict[str, Any] | None = None) -> Figure:
    """The knee search: each round's probe (validation accuracy after its full fine-tune against its weight-only
    int8 bytes, numbered in the order the rounds ran, filled when within the tolerance by the ship rule's test),
    the control, the tolerance line (the control's accuracy - ``max_drop`` points: the point estimate; the test
    uses the lower bound) and, when there was a screen, its curve.

    Args:
        probes: the rounds' probes in order (``search.PROBES`` of the last round's run.json): width, val_acc,
            control_val_acc, int8w_bytes, passes (the evaluate stage adds it).
        control_bytes: the control's int8w bytes (its point; none: no point).
        curve: ``search/curve.json`` (empty without a screen).
    """
    if not probes:
        raise ValueError("knee: no probe (no prune round has run)")
    fig, (ax,) = new_figure()
    if curve and curve.get("curve"):
        rows = curve["curve"]
        ax.plot([r["int8w_bytes"] for r in rows], [r["val_acc"] for r in rows], marker=".", color="0.6",
                linewidth=1, label=f"screen ({curve['epochs']} epoch{'' if curve['epochs'] == 1 else 's'})")
    ref = probes[0]["control_val_acc"]
    if control_bytes:
        ax.scatter([control_bytes], [ref], marker="s", color="tab:green", zorder=3, label="control (not cut)")
    ok = [p for p in probes if p["passes"]]
    bad = [p for p in probes if not p["passes"]]
    ax.scatter([p["int8w_bytes"] for p in ok], [p["val_acc"] for p in ok], s=60, color="tab:blue", zorder=4,
               label="round within the tolerance")
    ax.scatter([p["int8w_bytes"] for p in bad], [p["val_acc"] for p in bad], s=60, facecolors="none",
               edgecolors="tab:red", linewidths=2, zorder=4, label="round not within")
    for i, p in enumerate(probes, 1):
        ax.annotate(f"{i}: {p['width']:g}", (p["int8w_bytes"], p["val_acc"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.axhline(ref - max_drop / 100, color="tab:red", linestyle="--", linewidth=1,
               label=f"{max_drop:g} pt below the control (within: the lower bound, not the point, above it)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("int8w bytes (log)")
    ax.set_ylabel("validation accuracy (fp32)")
    ax.set_title("Knee search: the rounds' probes, in order")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def latency_rows(lat: dict[str, Any], batch_sizes: Iterable[int] = (1, 64)) -> list[tuple[str, str | None, list[float]]]:
    """(model, runtime or None, [ms per batch size]) for every model of ``metrics/latency.json`` that has them."""
    out = []
    for name, r in lat.items():
        if name.startswith("_") or not isinstance(r, dict):
            continue
        keys = [f"latency_b{b}_ms" for b in batch_sizes]
        if all(k in r for k in keys):
            out.append((name, r.get("runtime"), [float(r[k]) for k in keys]))
    return out


@styled
def latency(lat: dict[str, Any], batch_sizes: Iterable[int] = (1, 64)) -> Figure:
    """Horizontal bars of median latency per model (labelled with its runtime when given), one panel per batch size.

    Args:
        lat: ``metrics/latency.json``: model -> {latency_b<N>_ms, runtime (optional), ...}.
        batch_sizes: the batch sizes to show, one panel each.
    """
    batch_sizes = list(batch_sizes)
    rows = latency_rows(lat, batch_sizes)
    if not rows:
        raise ValueError(f"latency: no model has latency_b<N>_ms for batch sizes {batch_sizes}")
    labels = [f"{n} ({rt})" if rt else n for n, rt, _ in rows]
    fig, axes = new_figure(len(batch_sizes))
    y = list(range(len(rows)))
    for i, (ax, bs) in enumerate(zip(axes, batch_sizes)):
        ms = [v[i] for _, _, v in rows]
        ax.barh(y, ms, color="tab:blue")
        for yi, v in zip(y, ms):
            ax.annotate(f"{v:.2f}", (v, yi), xytext=(2, 0), textcoords="offset points", va="center", fontsize=6)
        ax.set_yticks(y, labels if i == 0 else [""] * len(y), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("median ms per batch")
        ax.set_title(f"batch {bs}")
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.15)
    fig.suptitle("CPU latency per model and runtime")
    return fig


@styled
def training_curves(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> Figure:
    """Validation accuracy and training loss per epoch of each trained model.

    Args:
        curves: model -> {"val_acc": [(epoch, value), ...], "train_loss": [(epoch, value), ...]}.
    """
    if not curves:
        raise ValueError("training_curves: no curves")
    fig, (acc_ax, loss_ax) = new_figure(2)
    for name, c in curves.items():
        for ax, key in ((acc_ax, "val_acc"), (loss_ax, "train_loss")):
            pts = c.get(key) or []
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    for ax, title, ylabel in ((acc_ax, "Validation accuracy", "val accuracy"), (loss_ax, "Training loss (distill: its KD loss)", "train loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


@styled
def confusion(rows: list[dict[str, Any]], classes: list[str]) -> Figure:
    """Counts of (actual, predicted) class pairs as a heat map, actual classes down, predicted across.

    Args:
        rows: ``{"actual": name, "predicted": name}`` per test image (``plots/confusion.csv``).
        classes: every class name, in label order (classes never seen still get their row and column).
    """
    if not classes:
        raise ValueError("confusion: no classes")
    index = {c: i for i, c in enumerate(classes)}
    counts = [[0] * len(classes) for _ in classes]
    for r in rows:
        counts[index[r["actual"]]][index[r["predicted"]]] += 1
    fig, (ax,) = new_figure()
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(ticks, classes, fontsize=7)
    if len(classes) <= 20:  # beyond that the numbers do not fit in their cells
        top = max(max(r) for r in counts) or 1
        for i, row in enumerate(counts):
            for j, n in enumerate(row):
                ax.text(j, i, str(n), ha="center", va="center", fontsize=6, color="white" if n > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix, test split ({len(rows)} images)")
    return fig


def csv_rows(text: str) -> list[dict[str, str]]:
    """The rows of a CSV text (such as ``plots/prune.csv``)."""
    return list(csv.DictReader(io.StringIO(text)))


def read_tsv_curve(path: str | os.PathLike, field: str) -> list[tuple[int, float]]:
    """(epoch, value) pairs of a dvclive TSV (columns timestamp, step, <field>); epoch = step + 1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing training curve (written by dvclive during training)")
    rows = list(csv.DictReader(io.StringIO(path.read_text()), delimiter="\t"))
    if rows and (field not in rows[0] or "step" not in rows[0]):
        raise ValueError(f"{path}: expected columns step and {field}, found {', '.join(rows[0])}")
    return [(int(r["step"]) + 1, float(r[field])) for r in rows]


def read_live_curves(live: str | os.PathLike, models: Iterable[str] = ("teacher", "student", "distill")
                     ) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """The training curves dvclive wrote under ``live/<model>/plots/metrics/``."""
    out = {}
    for m in models:
        base = Path(live) / m / "plots" / "metrics"
        out[m] = {"val_acc": read_tsv_curve(base / "val" / "acc.tsv", "acc"),
                  "train_loss": read_tsv_curve(base / "train" / "loss.tsv", "loss")}
    return out


def write_charts(ev: dict[str, Any], lat: dict[str, Any], prune_csv_rows: list[dict[str, Any]],
                 curves: dict[str, dict[str, list[tuple[int, float]]]], out_dir: str | os.PathLike,
                 report_dir: str | os.PathLike, shipped: str | None = None,
                 batch_sizes: Iterable[int] = (1, 64), confusion_rows: list[dict[str, Any]] | None = None,
                 classes: list[str] | None = None,
                 knee_args: tuple[list[dict[str, Any]], float, int | None, dict[str, Any] | None] | None = None
                 ) -> str:
    """Write the charts (``CHARTS``) into ``out_dir``; returns the markdown that embeds them in a
    report that lives in ``report_dir`` (image links relative to it).

    Args:
        ev, lat: the contents of ``metrics/evaluate.json`` and ``metrics/latency.json``.
        prune_csv_rows: rows of ``plots/prune.csv`` (see ``csv_rows``).
        curves: training curves (see ``read_live_curves``).
        shipped: name of the shipped artifact (default: ``ev["shipped"]["artifact"]`` when present).
        confusion_rows, classes: the shipped model's test predictions and the class names; without them
            ``confusion.png`` is not drawn.
        knee_args: ``knee``'s arguments (probes, ``evaluate.max_drop``, the control's int8w bytes, the screen's
            curve) for ``knee.png``; without it (or without a probe) ``knee.png`` is not drawn.
    """
    figures = {
        "tradeoff.png": tradeoff(prune_csv_rows, shipped_name(ev, shipped)),
        "acc_vs_bytes.png": accuracy_vs_bytes(ev, shipped),
        "prune_rounds.png": prune_rounds(prune_csv_rows),
        "latency.png": latency(lat, batch_sizes),
        "training_curves.png": training_curves(curves),
    }
    if confusion_rows is not None and classes:
        figures["confusion.png"] = confusion(confusion_rows, classes)
    if knee_args is not None and knee_args[0]:
        figures["knee.png"] = knee(*knee_args)
    out_dir = Path(out_dir)
    lines = ["## Charts", ""]
    for name, fig in figures.items():
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes(png_bytes(fig))
        rel = Path(os.path.relpath(out_dir / name, report_dir)).as_posix()
        lines += [f"![{CHARTS[name]}]({rel})", ""]
    return "\n".join(lines)
