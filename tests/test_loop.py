"""The comparison loop on the tiny project, with real DVC: a one-param change gives a short diff of the rows it
caused (no timing noise), `dvc exp show` stays narrow, and the shipped model is one named artifact that a
user fetches with `dvc artifacts get` and runs with onnxruntime alone."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT, clear_top1, copy_project, dvc, git, run
from shrink.data import decode_image, normalizer
from shrink.runtime import load_runtime

TIMING = ("latency", "speedup", "_ms", "wall_seconds", "seconds")
# classify.py resizes with Pillow, shrink with torch: a fifth of the pixels differ by 1. Measured on the tiny
# run's 48 test images as photos: the logits move by up to 0.04 of the largest |logit| (int8 QDQ; 0.01 for
# fp32 and int8w), and 1 of 48 labels of the shipped model changed. A photo whose top two are closer than 2.5x
# that may be labelled either way (all 12 photos of the test below were clear).
RESIZE_TOL = 0.1


def readme_commands(heading: str) -> list[str]:
    """The lines of the first bash block under the README's ``## <heading>``, as a user would paste them."""
    section = (ROOT / "README.md").read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.slow
def test_readme_comparing_runs_in_a_fresh_clone_shows_only_what_changed(tiny_run, tmp_path):
    """README's "Comparing runs", its commands as written, in a fresh clone right after the first run (which
    `make run` leaves uncommitted): the experiment's diff names only the edited round and what ships, against a
    HEAD that holds every figure (no `-` column, no "failed to load"), no timing among them, `dvc exp show` has no
    `!` cell and a narrow metrics section, and `dvc plots diff` draws the trade-off of both runs."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(tiny_run), str(clone))
    git(clone, "reset", "-q", "HEAD~1")  # tiny_run's last commit is its run: now in the worktree, uncommitted
    shutil.copytree(tiny_run / ".dvc/cache", clone / ".dvc/cache")  # and DVC's cached outputs, as after a run
    dvc(clone, "checkout", "-q")
    assert dvc(clone, "status").stdout.strip() == "Data and pipelines are up to date."
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}
    out = {}
    for line in readme_commands("Comparing runs"):
        if line.startswith("dvc exp run"):
            assert git(clone, "status", "--porcelain") == "", "the baseline does not hold all the run wrote for git"
            assert re.search(r"-S prune\.rounds\.\w+\.", line), line  # a round the tiny project has too (prune_1..3)
        proc = subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        out[line.split("#")[0].strip()] = proc.stdout + proc.stderr
    key = re.search(r"-S prune\.rounds\.(\w+)\.", next(c for c in out if c.startswith("dvc exp run"))).group(1)
    table = out["dvc metrics diff"]
    assert "failed to load" not in table, table
    rows = [line.split() for line in table.strip().splitlines()[1:]]  # Path Metric HEAD workspace Change
    assert rows and not [r for r in rows if r[2] == "-"], table  # every figure has its HEAD value
    assert {r[0] for r in rows} <= {f"metrics/prune/{key}.json", "metrics/summary.json"}, table
    assert f"metrics/prune/{key}.json" in {r[0] for r in rows}, table  # the round did change
    assert not [r for r in rows if any(t in r[1] for t in TIMING)], table  # timings are plain outputs
    assert 1 <= len(rows) <= 30, table  # the command a user types, no flags: a screenful
    shown = next(v for c, v in out.items() if c.startswith("dvc exp show"))
    assert "!" not in shown, shown

    shown = list(csv.reader(io.StringIO(dvc(clone, "exp", "show", "--csv").stdout)))
    header = shown[0]
    # columns: Experiment, rev, typ, Created, parent, then the metrics, then params (by section), then deps
    sections = set(yaml.safe_load((clone / "params.yaml").read_text()))
    first_param = next(i for i, h in enumerate(header) if h.split(".")[0] in sections)
    metric_cols = header[header.index("parent") + 1:first_param]
    # 41 with the default's stages and three rounds: 12 of them are summary.json's paired intervals (the shipped
    # artifact against teacher, student, distill and control: point, low, high)
    assert 5 <= len(metric_cols) <= 45, metric_cols
    assert not [h for h in metric_cols if any(t in h for t in TIMING)], metric_cols

    # the trade-off as DVC plots: `dvc plots diff` of the baseline and the experiment draws a curve for each
    exp = dvc(clone, "exp", "list", "--name-only").stdout.split()[0]
    plots = json.loads(dvc(clone, "plots", "diff", "HEAD", exp, "--json").stdout)["data"]
    rounds = yaml.safe_load((clone / "params.yaml").read_text())["prune"]["rounds"]
    for title in ("trade-off (accuracy vs bytes)", "trade-off (accuracy vs MACs)"):
        (plot,) = plots[title]
        values = plot["content"]["data"]["values"]
        assert plot["revisions"] == ["HEAD", exp] and len(values) == 2 * (1 + len(rounds)), title
        assert [v["model"] for v in values if v["rev"] == exp] == ["distill", *rounds]


def _photos(proj: Path, folder: Path, n: int = 12) -> list[Path]:
    """Test images of the project as photo files (PNG and JPEG, upscaled), so the predictions vary."""
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
    ours, theirs = (dict(line.split("\t") for line in out.splitlines()) for out in (ours, theirs))
    assert list(ours) == list(theirs) == [str(p) for p in photos]
    # other resizing, other pixels (RESIZE_TOL): every photo with a clear top class must get shrink's label
    shipped = load_runtime(got / "model.onnx")
    data = shipped.meta["data"]
    logits = shipped(normalizer(data)(torch.stack([decode_image(p, data["image_size"]) for p in photos])))
    clear = clear_top1(logits, RESIZE_TOL)
    assert int(clear.sum()) >= len(photos) // 2, logits  # not vacuous: most photos are clear
    assert {p: ours[p] for p, c in zip(ours, clear) if c} == {p: theirs[p] for p, c in zip(theirs, clear) if c}
    # the training stages logged their params with dvclive, beside their curves
    logged = yaml.safe_load((proj / "dvclive/distill/params.yaml").read_text())
    assert logged["distill"]["temperature"] == yaml.safe_load((proj / "params.yaml").read_text())["distill"]["temperature"]


def test_confusion_plot_holds_every_test_image(tiny_run):
    rows = list(csv.DictReader(io.StringIO((tiny_run / "plots/confusion.csv").read_text())))
    meta = json.loads((tiny_run / "data/prepared/meta.json").read_text())
    assert len(rows) == meta["splits"]["test"]
    assert {r["actual"] for r in rows} <= set(meta["classes"]) and {r["predicted"] for r in rows} <= set(meta["classes"])
    acc = sum(r["actual"] == r["predicted"] for r in rows) / len(rows)  # the runner and batches that counted it
    assert abs(acc - json.loads((tiny_run / "metrics/summary.json").read_text())["shipped"]["test_acc"]) < 1e-6
    assert "charts/confusion.png" in (tiny_run / "report.md").read_text()
    spec = yaml.safe_load((tiny_run / "dvc.yaml").read_text())
    assert {"plots/confusion.csv": {"title": "Confusion matrix of the shipped model (test split)",
                                    "template": "confusion", "x": "actual", "y": "predicted"}} in spec["plots"]
