"""The comparison loop on the tiny project, with real DVC: a one-param change gives a short diff of the rows it
caused (no timing noise), `dvc exp show` stays narrow, and the shipped model is one named artifact that a
user fetches with `dvc artifacts get` and runs with onnxruntime alone."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import yaml
from PIL import Image

from conftest import ROOT, copy_project, dvc, git, run

TIMING = ("latency", "speedup", "_ms", "wall_seconds", "seconds")


def last_round(proj: Path) -> str:
    return list(yaml.safe_load((proj / "params.yaml").read_text())["prune"]["rounds"])[-1]


def test_one_round_change_gives_a_short_diff_and_a_narrow_exp_show(tiny_run, tmp_path):
    proj = copy_project(tiny_run, tmp_path / "proj")
    # What ships under evaluate.ship: auto is decided by latency too (see shrink.ship): on this tiny net (16 px,
    # ~0.2 ms per image) and a loaded shared CPU the timings overlap and the choice can flip between two runs.
    # A kind asked for is chosen on validation alone: this test is about the metrics files, not the ship rule.
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["evaluate"]["ship"] = "int8w"
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(proj, "repro")
    git(proj, "commit", "-qam", "ship int8w")
    assert dvc(proj, "metrics", "diff", "--json").stdout.strip() in ("{}", "")  # nothing changed yet
    key = last_round(proj)
    dvc(proj, "exp", "run", "-S", f"prune.rounds.{key}.epochs=2")

    diff = json.loads(dvc(proj, "metrics", "diff", "--json").stdout)
    rows = [(path, name) for path, figures in diff.items() for name in figures]
    # only what the change caused: the retrained round's own figures and the final model's artifacts
    assert {path for path, _ in rows} <= {f"metrics/prune/{key}.json", "metrics/summary.json"}, rows
    assert not [r for r in rows if any(t in r[1] for t in TIMING)], rows
    assert "test_loss" in diff.get(f"metrics/prune/{key}.json", {}), diff  # it did retrain
    assert diff[f"metrics/prune/{key}.json"].get("macs") is None  # same widths: same compute
    # the command a user types, no flags: a header and at most 30 rows
    table = dvc(proj, "metrics", "diff").stdout.strip().splitlines()
    assert 1 <= len(table) - 1 <= 30, "\n".join(table)
    assert not any(t in line for line in table[1:] for t in TIMING), "\n".join(table)

    shown = list(csv.reader(io.StringIO(dvc(proj, "exp", "show", "--csv").stdout)))
    header = shown[0]
    # columns: Experiment, rev, typ, Created, parent, then the metrics, then params (by section), then deps
    sections = set(yaml.safe_load((proj / "params.yaml").read_text()))
    first_param = next(i for i, h in enumerate(header) if h.split(".")[0] in sections)
    metric_cols = header[header.index("parent") + 1:first_param]
    assert 5 <= len(metric_cols) <= 40, metric_cols
    assert not [h for h in metric_cols if any(t in h for t in TIMING)], metric_cols

    # the trade-off as DVC plots: `dvc plots diff` of the baseline and the experiment draws a curve for each
    exp = dvc(proj, "exp", "list", "--name-only").stdout.split()[0]
    plots = json.loads(dvc(proj, "plots", "diff", "HEAD", exp, "--json").stdout)["data"]
    rounds = yaml.safe_load((proj / "params.yaml").read_text())["prune"]["rounds"]
    for title in ("trade-off (accuracy vs bytes)", "trade-off (accuracy vs MACs)"):
        (plot,) = plots[title]
        values = plot["content"]["data"]["values"]
        assert plot["revisions"] == ["HEAD", exp] and len(values) == 2 * (1 + len(rounds)), title
        assert [v["model"] for v in values if v["rev"] == exp] == ["distill", *rounds]


def _photos(proj: Path, folder: Path, n: int = 12) -> list[Path]:
    """Test images of the project as photo files (PNG and JPEG, upscaled), so the predictions vary."""
    import torch

    folder.mkdir()
    images = torch.load(proj / "data/prepared/test.pt", weights_only=True)["images"][:n]
    out = []
    for i, x in enumerate(images):
        path = folder / f"photo_{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(x.permute(1, 2, 0).numpy()).resize((40, 40), Image.NEAREST).save(path)
        out.append(path)
    return out


def test_shipped_artifact_is_fetched_and_runs_with_onnxruntime_alone(tiny_run, tmp_path):
    proj = copy_project(tiny_run, tmp_path / "proj")
    info = json.loads((proj / "shipped/model.json").read_text())
    summary = json.loads((proj / "metrics/summary.json").read_text())
    table = json.loads((proj / "metrics/evaluate.json").read_text())
    assert info["name"] == summary["shipped"]["name"] == table["shipped"]["name"]
    assert info["classes"] == json.loads((proj / "data/prepared/meta.json").read_text())["classes"]
    assert summary["shipped"]["macs"] > 0

    # a release: a GTO tag on the commit, then fetched from the repository by name
    git(proj, "tag", "-a", "shrink-classifier@v0.1.0", "-m", "shrink-classifier v0.1.0")  # annotated, as GTO reads
    got = tmp_path / "got"
    dvc(tmp_path, "artifacts", "get", str(proj), "shrink-classifier", "-o", str(got))
    assert (got / "model.onnx").read_bytes() == (proj / "shipped/model.onnx").read_bytes()
    assert json.loads((got / "model.json").read_text()) == info
    dvc(tmp_path, "get", str(proj), "shipped/model.json", "-o", str(tmp_path / "model.json"))

    photos = _photos(proj, tmp_path / "photos")
    # the user's script: only onnxruntime, numpy and Pillow (checked by running it with nothing else importable)
    script = ROOT / "scripts" / "classify.py"
    assert len(script.read_text().splitlines()) <= 15
    imports = {line.split()[1].rstrip(",") for line in script.read_text().splitlines() if line.startswith(("import", "from"))}
    assert imports <= {"json,", "json", "numpy", "np,", "onnxruntime", "PIL"}, imports
    ours = run([sys.executable, str(script), str(got), *map(str, photos)], tmp_path).stdout
    theirs = run([sys.executable, "-m", "shrink.cli", "predict", *map(str, photos)], proj).stdout
    assert ours.splitlines() and ours == theirs
    # the training stages logged their params with dvclive, beside their curves
    logged = yaml.safe_load((proj / "dvclive/distill/params.yaml").read_text())
    assert logged["distill"]["temperature"] == yaml.safe_load((proj / "params.yaml").read_text())["distill"]["temperature"]


def test_confusion_plot_holds_every_test_image(tiny_run):
    rows = list(csv.DictReader(io.StringIO((tiny_run / "plots/confusion.csv").read_text())))
    meta = json.loads((tiny_run / "data/prepared/meta.json").read_text())
    assert len(rows) == meta["splits"]["test"]
    assert {r["actual"] for r in rows} <= set(meta["classes"]) and {r["predicted"] for r in rows} <= set(meta["classes"])
    acc = sum(r["actual"] == r["predicted"] for r in rows) / len(rows)
    assert abs(acc - json.loads((tiny_run / "metrics/summary.json").read_text())["shipped"]["test_acc"]) < 1e-6
    assert "charts/confusion.png" in (tiny_run / "report.md").read_text()
    spec = yaml.safe_load((tiny_run / "dvc.yaml").read_text())
    assert {"plots/confusion.csv": {"title": "Confusion matrix of the shipped model (test split)",
                                    "template": "confusion", "x": "actual", "y": "predicted"}} in spec["plots"]
