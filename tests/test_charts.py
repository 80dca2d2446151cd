"""The report's charts: made from plain data, deterministic, embedded in report.md with relative links."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from shrink import charts

# Shaped like metrics/evaluate.json, metrics/latency.json and plots/prune.csv of a real run (README figures).
EV = {
    "teacher": {"kind": "fp32", "test_acc": 0.9098, "params": 11181642, "bytes": 44803531},
    "student": {"kind": "fp32", "test_acc": 0.8959, "params": 256522, "bytes": 1056587},
    "distill": {"kind": "fp32", "test_acc": 0.8977, "params": 256522, "bytes": 1056587},
    "prune_1": {"kind": "fp32", "test_acc": 0.9025, "params": 235809, "bytes": 972619},
    "prune_2": {"kind": "fp32", "test_acc": 0.9017, "params": 217593, "bytes": 899275},
    "prune_2.fp16": {"kind": "fp16", "test_acc": 0.9016, "params": 217593, "bytes": 450000},
    "prune_2.uint8": {"kind": "uint8", "test_acc": 0.8999, "params": 217593, "bytes": 230000},
    "prune_2.int8": {"kind": "int8", "test_acc": 0.9010, "params": 217593, "bytes": 280000},
    "shipped": {"artifact": "models/quantized/prune_2.uint8.pt", "kind": "uint8"},  # another branch's section
}
LAT = {
    "teacher": {"latency_b1_ms": 5.96, "latency_b64_ms": 27.96, "speedup_b1_vs_teacher": 1.0},
    "student": {"latency_b1_ms": 1.92, "latency_b64_ms": 8.04},
    "distill": {"latency_b1_ms": 1.69, "latency_b64_ms": 8.10, "runtime": "PyTorch eager fp32"},
    "prune_2.int8": {"latency_b1_ms": 0.38, "latency_b64_ms": 3.64, "runtime": "ORT int8 QDQ"},
    "_setup": {"threads": 2, "repeats": 15, "image_size": 28},
}
PRUNE_CSV = """round,model,width,params,macs,kind,bytes,val_acc,test_acc,fp32_test_acc,val_acc_after_cut
0,distill,1.0,256522,4769320,uint8,262000,0.9010,0.8977,0.8980,
1,prune_1,0.95,235809,4400000,uint8,241000,0.9040,0.9025,0.9020,0.8871
2,prune_2,0.9025,217593,4100000,uint8,230000,0.9030,0.9017,0.9020,0.8950
"""
CURVES = {
    "teacher": {"val_acc": [(1, 0.85), (2, 0.88), (3, 0.90)], "train_loss": [(1, 0.6), (2, 0.4), (3, 0.3)]},
    "student": {"val_acc": [(1, 0.80), (2, 0.86), (3, 0.89)], "train_loss": [(1, 0.8), (2, 0.5), (3, 0.4)]},
    "distill": {"val_acc": [(1, 0.81), (2, 0.87), (3, 0.90)], "train_loss": [(1, 0.7), (2, 0.45), (3, 0.35)]},
}


def all_figures(ev=EV, lat=LAT, prune=PRUNE_CSV, curves=CURVES):
    return {
        "tradeoff": charts.tradeoff(charts.csv_rows(prune), "prune_2.uint8"),
        "acc_vs_bytes": charts.accuracy_vs_bytes(ev),
        "prune_rounds": charts.prune_rounds(charts.csv_rows(prune)),
        "latency": charts.latency(lat),
        "training_curves": charts.training_curves(curves),
    }


def test_same_data_give_identical_png_bytes():
    first = {k: charts.png_bytes(f) for k, f in all_figures().items()}
    second = {k: charts.png_bytes(f) for k, f in all_figures().items()}
    for name, png in first.items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png == second[name], f"{name}: two renders of the same data differ"
        assert b"matplotlib" not in png.lower(), f"{name}: version stamp left in the PNG"
        img = Image.open(io.BytesIO(png))
        assert img.size == (int(charts.SIZE[0] * charts.DPI), int(charts.SIZE[1] * charts.DPI))
        assert len(img.convert("L").getcolors(256)) > 10, f"{name}: blank picture"


def test_different_data_give_different_pictures():
    ev = {k: dict(v) for k, v in EV.items()}
    ev["prune_2.uint8"]["test_acc"] = 0.80
    assert charts.png_bytes(charts.accuracy_vs_bytes(ev)) != charts.png_bytes(charts.accuracy_vs_bytes(EV))
    lat = {k: dict(v) for k, v in LAT.items()}
    lat["teacher"]["latency_b64_ms"] = 60.0
    assert charts.png_bytes(charts.latency(lat)) != charts.png_bytes(charts.latency(LAT))


def test_accuracy_vs_bytes_is_log_x_one_point_per_model_and_rings_the_shipped_one():
    fig = charts.accuracy_vs_bytes(EV)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    models = charts.model_rows(EV)
    assert "shipped" not in models
    # one scatter per kind plus the ring around the shipped artifact
    kinds = {r["kind"] for r in models.values()}
    points = [tuple(p) for c in ax.collections[: len(kinds)] for p in c.get_offsets()]
    assert sorted(points) == sorted((r["bytes"], r["test_acc"]) for r in models.values())
    ring = ax.collections[len(kinds)].get_offsets()
    assert [tuple(p) for p in ring] == [(230000, 0.8999)]
    assert "shipped: prune_2.uint8" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(t.get_text() for t in ax.texts) == sorted(models)


def test_shipped_name_accepts_a_model_name_a_path_or_nothing():
    assert charts.shipped_name(EV) == "prune_2.uint8"
    assert charts.shipped_name(EV, "distill") == "distill"
    assert charts.shipped_name(EV, "models/quantized/prune_2.int8.onnx") == "prune_2.int8"
    no_section = {k: v for k, v in EV.items() if k != "shipped"}
    assert charts.shipped_name(no_section) is None
    assert len(charts.accuracy_vs_bytes(no_section).axes[0].collections) == 4  # no ring
    with pytest.raises(ValueError, match="prune_9.uint8"):
        charts.shipped_name(EV, "prune_9.uint8")


def test_prune_rounds_plots_the_csv_rows():
    fig = charts.prune_rounds(charts.csv_rows(PRUNE_CSV))
    acc_ax, par_ax = fig.axes
    test_line, cut_line = acc_ax.get_lines()
    assert list(test_line.get_xdata()) == [0, 1, 2]
    assert list(test_line.get_ydata()) == [0.8977, 0.9025, 0.9017]
    assert list(cut_line.get_xdata()) == [1, 2]  # round 0 has no cut
    assert [p.get_height() for p in par_ax.patches] == [256522, 235809, 217593]
    with pytest.raises(ValueError, match="prune.csv"):
        charts.prune_rounds([])


def test_tradeoff_marks_the_rounds_the_shipped_point_the_unpruned_student_and_the_course_limit():
    fig = charts.tradeoff(charts.csv_rows(PRUNE_CSV), "prune_2.uint8")
    by_bytes, by_macs = fig.axes
    curve, limit = by_bytes.get_lines()
    assert list(curve.get_xdata()) == [262000, 241000, 230000] and list(curve.get_ydata()) == [0.8977, 0.9025, 0.9017]
    assert list(limit.get_xdata()) == [300_000, 300_000]  # the course's limit, a vertical line
    assert list(by_macs.get_lines()[0].get_xdata()) == [4769320, 4400000, 4100000]
    legend = [t.get_text() for t in by_bytes.get_legend().get_texts()]
    assert "shipped: prune_2.uint8" in legend and "unpruned: distill" in legend and "course limit 300,000 B" in legend
    ring = by_bytes.collections[-1].get_offsets()
    assert ring.tolist() == [[230000, 0.9017]]
    no_ship = charts.tradeoff(charts.csv_rows(PRUNE_CSV), "prune_9.int8w")  # not a row: nothing ringed
    assert len(no_ship.axes[0].collections) == 1
    with pytest.raises(ValueError, match="prune.csv"):
        charts.tradeoff([])


def test_latency_has_a_panel_per_batch_size_and_names_runtimes():
    fig = charts.latency(LAT)
    b1, b64 = fig.axes[:2]
    assert [p.get_width() for p in b1.patches] == [5.96, 1.92, 1.69, 0.38]
    assert [p.get_width() for p in b64.patches] == [27.96, 8.04, 8.10, 3.64]
    labels = [t.get_text() for t in b1.get_yticklabels()]
    assert labels == ["teacher", "student", "distill (PyTorch eager fp32)", "prune_2.int8 (ORT int8 QDQ)"]
    with pytest.raises(ValueError, match="latency_b"):
        charts.latency({"_setup": {}})


def test_training_curves_one_line_per_model():
    acc_ax, loss_ax = charts.training_curves(CURVES).axes
    assert [l.get_label() for l in acc_ax.get_lines()] == ["teacher", "student", "distill"]
    assert list(loss_ax.get_lines()[1].get_ydata()) == [0.8, 0.5, 0.4]


def test_read_live_curves_reads_dvclive_tsv(tmp_path: Path):
    for m in ("teacher", "student", "distill"):
        base = tmp_path / m / "plots" / "metrics"
        (base / "val").mkdir(parents=True)
        (base / "train").mkdir(parents=True)
        (base / "val" / "acc.tsv").write_text("timestamp\tstep\tacc\n1700000000000\t0\t0.5\n1700000001000\t1\t0.75\n")
        (base / "train" / "loss.tsv").write_text("timestamp\tstep\tloss\n1700000000000\t0\t1.5\n1700000001000\t1\t0.9\n")
    curves = charts.read_live_curves(tmp_path)
    assert curves["student"] == {"val_acc": [(1, 0.5), (2, 0.75)], "train_loss": [(1, 1.5), (2, 0.9)]}
    (tmp_path / "distill" / "plots" / "metrics" / "train" / "loss.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="distill/plots/metrics/train/loss.tsv"):
        charts.read_live_curves(tmp_path)


def test_write_charts_writes_pngs_and_markdown_with_relative_links(tmp_path: Path):
    pairs = [{"actual": "a", "predicted": "a"}, {"actual": "a", "predicted": "b"}, {"actual": "b", "predicted": "b"}]
    screened = {"epochs": 1, "reference": {"width": 1.0, "val_acc": 0.91, "int8w_bytes": 265_000},
                "curve": [{"width": w, "val_acc": a, "int8w_bytes": b}
                          for w, a, b in ((0.5, 0.909, 88_000), (0.25, 0.903, 38_000), (0.13, 0.88, 24_000))]}
    probes = [{"round": n, "width": w, "val_acc": a, "control_val_acc": 0.91, "int8w_bytes": b, "passes": ok}
              for n, w, a, b, ok in (("p1", 0.25, 0.903, 38_000, False), ("p2", 0.5, 0.909, 88_000, True),
                                     ("p3", 0.35, 0.905, 56_000, False))]
    md = charts.write_charts(EV, LAT, charts.csv_rows(PRUNE_CSV), CURVES, tmp_path / "charts", tmp_path,
                             confusion_rows=pairs, classes=["a", "b", "c"],
                             knee_args=(probes, 0.5, 265_000, screened))
    for name, caption in charts.CHARTS.items():
        assert (tmp_path / "charts" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"![{caption}](charts/{name})" in md
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == sorted(charts.CHARTS)  # no temp files left
