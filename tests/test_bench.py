"""The benchmark (``shrink.bench``): targets, the markdown report, the course-style folder, the project-copy
helpers, and that sections 1-2 report exactly what the evaluate stage measured. No assertion here is on a timing."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from shrink import bench
from shrink.bench import project, report, sections, targets
from shrink.bench.datapath import SeedStyleDataset, seed_transform, write_food11_folder
from shrink.config import DataParams, EvaluateParams
from shrink.data import Split, food11_label, load_split, prepare
from shrink.evaluate import REFERENCE, decide
from shrink.formats import get_format
from shrink.measure import Entry, compare
from shrink.models import count_params
from shrink.runtime import FP32_LABELS, Runtime

from conftest import ROOT


def test_ratio():
    assert targets.ratio(6, 3) == 2
    assert targets.ratio(1, 0) is None and targets.ratio(None, 1) is None and targets.ratio(1, None) is None


def test_targets_met_missed_and_by_how_much():
    fast = targets.check_target("size", 200.0)
    assert fast.met is True and fast.shortfall is None
    slow = targets.check_target("shipped_b64", 0.8)  # goal >= 1x
    assert slow.met is False and slow.shortfall == pytest.approx(1.25)
    assert targets.check_target("shipped_bytes", 300_001).met is False
    assert targets.check_target("accuracy", -0.2).met is True  # the shipped artifact gained accuracy
    late = targets.check_target("late_rerun", 0.5)  # goal <= 0.25
    assert late.met is False and late.shortfall == pytest.approx(2.0)
    assert targets.check_target("late_rerun", 0.1).met is True
    unknown = targets.check_target("size", None)
    assert unknown.met is None and unknown.as_dict()["value"] is None
    # the speed targets say which statistic they hold, and against evaluate's reference
    for key in ("shipped_b1", "shipped_b64", "pruned_b64"):
        assert "median" in targets.TARGETS[key][0] and REFERENCE in targets.TARGETS[key][0]


def _results():
    checks = [targets.check_target("size", 200.0).as_dict(), targets.check_target("shipped_b64", 0.8).as_dict(),
              targets.check_target("shipped_bytes", 224_000).as_dict(),
              targets.check_target("late_rerun", 0.5).as_dict(), targets.check_target("data_path", None).as_dict()]
    return {
        "mode": "quick", "threads": 2, "warnings": ["busy"],
        "machine": {"cpu": "Test CPU", "cpu_count": 2, "affinity": 2, "torch": "x", "date": "today",
                    "busy_before": 0.1, "busy_after": None, "load_before": 1.5, "load_after": 2.25},
        "targets": checks,
        "compression": {"teacher_bytes": 44_800_000, "shipped": "prune_5.int8", "shipped_bytes": 224_000,
                        "size_ratio": 200.0, "source": "test",
                        "rows": [{"model": "teacher", "params": 11_000_000, "bytes": 44_800_000, "test_acc": 0.9,
                                  "x_smaller": 1.0, "acc_vs_teacher": 0.0},
                                 {"model": "prune_5.int8", "runtime": "ORT int8 QDQ", "params": 200_000, "bytes": 224_000, "test_acc": 0.88,
                                  "x_smaller": 200.0, "acc_vs_teacher": -0.02}]},
        "latency": {"source": "metrics/latency.json", "repeats": 3, "warmup": 1, "threads": 2, "image_size": 28,
                    "reference": "distill.ort", "batch_sizes": [1, 64], "models": [
            {"name": "teacher", "runtime": "PyTorch eager fp32",
             "batch": {"1": {"median_ms": 4.0, "min_ms": 3.0, "vs_teacher": 1.0, "vs_ref": 0.5},
                       "64": {"median_ms": 40.0, "min_ms": 30.0, "vs_teacher": 1.0, "vs_ref": 0.0025}}},
            {"name": "int8", "runtime": "ORT int8 QDQ",
             "batch": {"1": {"median_ms": 0.1, "min_ms": 0.08, "vs_teacher": 40.0, "vs_ref": 20.0},
                       "64": {"median_ms": None, "min_ms": None, "vs_teacher": None, "vs_ref": None}}}]},
        "data_path": {"images": 512, "batch_size": 128, "repeats": 2, "threads": 2, "rows": [
            {"loader": "pipeline", "images_per_s": 3000.0, "pipeline_speedup": 1.0},
            {"loader": "course", "images_per_s": 1000.0, "pipeline_speedup": 3.0}]},
        "pipeline": {"params": "quick", "change": "prune.rounds.prune_3.epochs 1 -> 2", "runs": [
            {"run": "full", "seconds": 40.0, "fraction": 1.0, "stages": ["prepare", "teacher"]},
            {"run": "no-op", "seconds": 1.0, "fraction": 0.025, "stages": []}]},
    }


def test_markdown_states_each_target_and_the_miss():
    md = report.render_markdown(_results())
    lines = md.splitlines()
    assert lines[0] == "# Benchmark (quick mode)"
    assert "> **Warning:** busy" in lines
    assert "Other processes kept 0.10 cores busy before, — after (1-minute load average 1.50, 2.25)" in md
    row = next(line for line in lines if line.startswith("| shipped artifact"))
    assert "200x" in row and "**met**" in row
    row = next(line for line in lines if line.startswith("| shipped artifact speed"))
    assert "0.8x" in row and ">= 1.0x" in row and "**missed**: needs 1.25x more" in row and "median" in row
    row = next(line for line in lines if line.startswith("| shipped artifact bytes"))
    assert "224,000" in row and "<= 300,000" in row and "**met**" in row
    row = next(line for line in lines if line.startswith("| rerun after"))
    assert "0.5" in row and "<= 0.25" in row and "**missed**: 2.00x over" in row
    assert "not measured" in next(line for line in lines if line.startswith("| training loop"))
    for title in ("## 1. Compression", "## 2. Inference latency", "## 3. Training data path", "## 4. Pipeline cost",
                  "## 5. Machine"):
        assert any(line.startswith(title) for line in lines), title
    assert "| prune_5.int8 | ORT int8 QDQ | 200,000 | 224 kB | 200.0 | 0.8800 | -2.00 |" in lines
    # latency: evaluate's statistic is named, times are median / min, speed-ups evaluate's
    assert "Measured by the evaluate stage, not by this command" in md and "Times: median / min (ms)" in md
    assert ("| model | runtime | batch 1 (ms) | batch 64 (ms) | vs teacher b1 | vs teacher b64 | vs distill.ort b1 "
            "| vs distill.ort b64 |") in lines
    assert "| int8 | ORT int8 QDQ | 0.1 / 0.08 | — / — | 40.00x | — | 20.00x | — |" in lines
    assert "| teacher | PyTorch eager fp32 | 4 / 3 | 40 / 30 | 1.00x | 1.00x | 0.50x | 0.0025x |" in lines  # not 0.00x
    assert "| no-op | 1.0 | 0.025 | none |" in lines
    # every table row has as many cells as its header
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            n = lines[i - 1].count("|")
            for body in lines[i + 1 :]:
                if not body.startswith("|"):
                    break
                assert body.count("|") == n, body


def test_markdown_renders_partial_results():
    md = report.render_markdown({"mode": "default", "targets": []})
    assert "## Targets" in md and "## 1." not in md


def test_food11_folder_reads_back_through_prepare_with_the_same_labels(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    # a flat colour per class plus mild noise, so JPEG keeps the classes apart (not needed for labels)
    images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 20, (12, 3, 16, 16), generator=g)).to(torch.uint8)
    files = write_food11_folder(images, labels, tmp_path / "food", val=4)
    assert [f.name for f in files] == [f"{int(y)}_{i}.jpg" for i, y in enumerate(labels)]
    assert len(list((tmp_path / "food" / "validation").glob("*.jpg"))) == 4
    assert [food11_label(f) for f in files] == labels.tolist()

    prepare(DataParams(source="folder", root=str(tmp_path / "food"), image_size=16), tmp_path / "prepared", seed=0)
    train = load_split(tmp_path / "prepared", "train")
    expected = [food11_label(f) for f in sorted(files)]  # prepare lists files in name order
    assert train.labels.tolist() == expected
    assert train.images.shape == (12, 3, 16, 16)


@pytest.mark.parametrize("preload", [True, False])
def test_seed_style_dataset_yields_transformed_items(tmp_path, preload):
    labels = torch.tensor([0, 1, 2])
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    write_food11_folder(images, labels, tmp_path / "food")
    ds = SeedStyleDataset(tmp_path / "food" / "training", seed_transform(16, 2, [0.5] * 3, [0.25] * 3),
                          preload=preload)
    assert len(ds) == 3 and sorted(ds.labels) == [0, 1, 2]
    x, y = ds[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == ds.labels[1]


def test_tiny_overrides_and_the_late_change_on_the_real_params():
    params = project.tiny_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert params["data"]["limit"] == 300 and params["data"]["image_size"] == 16
    assert all(params[s]["train"]["epochs"] == 1 for s in ("teacher", "student", "distill"))
    rounds = params["prune"]["rounds"]
    assert list(rounds) == ["prune_1", "prune_2", "prune_3"]
    assert project.bump_last_round(params) == "prune.rounds.prune_3.epochs 1 -> 2"
    assert rounds["prune_3"]["epochs"] == 2 and rounds["prune_2"]["epochs"] == 1
    if "quantize" in params:  # every model it quantizes must still exist
        assert set(params["quantize"]["models"]) <= {"teacher", "student", "distill", "control"}  # rounds: their own


def test_stages_ran():
    out = "Running stage 'prepare':\n> python ...\nStage 'teacher' didn't change, skipping\nRunning stage 'prune@prune_5':\n"
    assert project.stages_ran(out) == ["prepare", "prune@prune_5"]


def test_project_copy_is_a_committed_repo_with_tiny_params(tmp_path):
    copy = project.make_project_copy(ROOT, tmp_path / "copy", quick=True)
    assert {p.name for p in copy.iterdir()} >= {"dvc.yaml", "params.yaml", "stages", "src", ".dvc", ".git"}
    assert not list((copy / "src").rglob("__pycache__"))
    expected = project.tiny_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()))
    if not Path(expected["data"]["root"]).is_absolute():  # a relative root means the original project's data
        expected["data"]["root"] = str((ROOT / expected["data"]["root"]).resolve())
    assert yaml.safe_load((copy / "params.yaml").read_text()) == expected
    assert project.git(copy, "status", "--porcelain").strip() == ""  # everything committed
    assert project.git(copy, "log", "--format=%s").strip() == "bench copy"


def test_no_stage_depends_on_the_benchmark():
    """Editing shrink.bench must never invalidate a DVC stage: no dep names it, no stage imports it."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    deps = [d for s in stages.values() for d in (s.get("do") or s).get("deps", [])]
    assert "src/shrink/io.py" in deps  # the deps were read
    for dep in deps:
        assert not dep.startswith("src/shrink/bench") and dep.rstrip("/") not in ("src", "src/shrink"), dep
    importers = re.compile(r"^\s*(from (shrink|\.)\.?bench\b|import shrink\.bench|from (shrink|\.) import bench)", re.M)
    modules = [*(ROOT / "stages").glob("*.py"), *(ROOT / "src/shrink").glob("*.py")]
    assert len(modules) > 10
    for path in modules:  # the `shrink` command (cli.py) loads it by name, on `shrink bench` only
        assert not importers.search(path.read_text()), path


def test_compression_reads_the_shipped_section(tmp_path):
    ev = {"teacher": {"kind": "fp32", "runtime": "PyTorch eager fp32", "params": 10, "bytes": 45_000_000,
                      "test_acc": 0.9, "acc_vs_teacher": 0.0},
          "prune_5": {"kind": "fp32", "runtime": "PyTorch eager fp32", "params": 5, "bytes": 700_000,
                      "test_acc": 0.882, "acc_vs_teacher": -0.018},
          "prune_5.ort": {"kind": "fp32", "runtime": "ORT fp32", "params": 5, "bytes": 710_000,
                          "test_acc": 0.882, "acc_vs_teacher": -0.018},
          "prune_5.uint8": {"kind": "uint8", "bytes": 180_000, "test_acc": 0.88, "acc_vs_teacher": -0.02},
          "prune_5.int8w": {"kind": "int8w", "bytes": 185_000, "test_acc": 0.881, "acc_vs_teacher": -0.019},
          "shipped": {"name": "prune_5.int8w", "artifact": "models/quantized/prune_5.int8w.onnx", "kind": "int8w",
                      "bytes": 185_000, "test_acc": 0.881, "parent": "prune_5", "acc_vs_parent": -0.001, "rule": "r"}}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps(ev))
    c = sections.compression(tmp_path)
    assert c["shipped"] == "prune_5.int8w" and c["shipped_bytes"] == 185_000
    assert c["shipped_vs_uint8"] == pytest.approx(185 / 180) and c["size_ratio"] == pytest.approx(45_000 / 185)
    assert c["shipped_acc_drop_points"] == pytest.approx(0.1)
    assert c["final"] == "prune_5"  # the last eager fp32 row, not its .ort export
    assert [r["model"] for r in c["rows"]] == [m for m in ev if m != "shipped"]


def _tiny_runtime(name: str, kind: str, engine: str, width: int, nbytes: int) -> Runtime:
    torch.manual_seed(width)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, 3)).eval()
    label = FP32_LABELS[engine] if kind == "fp32" else get_format(kind).label
    return Runtime(Path(f"models/{name}"), kind, label, {}, nbytes, model)


def test_sections_1_and_2_report_what_evaluate_measured(tmp_path):
    """Run evaluate's own comparison (real models, its one timer) as stages/evaluate.py does, write its two
    metrics files, and check that the benchmark reports exactly evaluate's figures: no second timing."""
    spec = [("teacher", "fp32", "torch", 256, None), ("student", "fp32", "torch", 16, None),
            ("distill", "fp32", "torch", 16, None), ("prune_1", "fp32", "torch", 8, None),
            ("teacher.ort", "fp32", "ort", 256, "teacher"), ("distill.ort", "fp32", "ort", 16, "distill"),
            ("prune_1.ort", "fp32", "ort", 8, "prune_1"), ("distill.int8w", "int8w", "ort", 16, "distill"),
            ("prune_1.uint8", "uint8", "torch", 8, "prune_1"), ("prune_1.int8w", "int8w", "ort", 8, "prune_1")]
    entries = []
    for name, kind, engine, width, source in spec:
        run = _tiny_runtime(name, kind, engine, width, nbytes=1000 * width + (7 if kind == "int8w" else 0))
        entries.append(Entry(name, run, count_params(run.model), run.bytes, source=source))
    g = torch.Generator().manual_seed(0)
    test = Split(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g),
                 torch.randint(0, 3, (32,), generator=g))
    meta = {"mean": [0.5] * 3, "std": [0.25] * 3, "image_size": 8, "classes": ["a", "b", "c"]}
    p = EvaluateParams(repeats=3, warmup=0, batch_sizes=[1, 64], max_drop=100, reference="distill")  # no control
    m = compare(entries, test, meta, p, test, REFERENCE)
    name = decide(entries, m, ["prune_1"], p).name
    ev, lat = m.ev, m.lat
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps(ev))
    (tmp_path / "metrics/latency.json").write_text(json.dumps(lat))
    assert not sections.has_outputs(tmp_path)  # no prepared data yet: section 3 could not run
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/meta.json").write_text(json.dumps(meta))
    assert sections.has_outputs(tmp_path)

    c = sections.compression(tmp_path)
    assert c["final"] == "prune_1" and c["shipped"] == name and c["parent"] == "prune_1"
    got = sections.latency(tmp_path, c["final"], c["shipped"])
    assert got["batch_sizes"] == [1, 64] and got["reference"] == REFERENCE == "distill.ort"
    assert got["repeats"] == 3 and got["threads"] == p.threads and got["image_size"] == 8
    names = [r["name"] for r in got["models"]]
    assert names == [n for n in lat if n.split(".")[0] in ("teacher", "distill", "prune_1")]
    assert "student" not in names and "student.ort" not in names
    for r in got["models"]:
        row = lat[r["name"]]
        assert r["runtime"] == row["runtime"]
        for b in (1, 64):
            cell = r["batch"][str(b)]
            assert cell["median_ms"] == row[f"latency_b{b}_ms"] and cell["min_ms"] == row[f"min_b{b}_ms"]
            assert cell["vs_teacher"] == row[f"speedup_b{b}_vs_teacher"]
            assert cell["vs_ref"] == row[f"speedup_b{b}_vs_{REFERENCE}"]
            # one schema: the speed-up is a ratio of medians, as evaluate computes it
            assert cell["vs_ref"] == pytest.approx(lat[REFERENCE][f"latency_b{b}_ms"] / cell["median_ms"],
                                                   rel=1e-2, abs=6e-4)  # evaluate rounds to 3 decimals
    assert got["shipped_vs_ref_b1"] == lat[name][f"speedup_b1_vs_{REFERENCE}"]
    assert got["shipped_vs_ref_b64"] == lat[name][f"speedup_b64_vs_{REFERENCE}"]
    assert got["final_ort_vs_ref_b64"] == lat["prune_1.ort"][f"speedup_b64_vs_{REFERENCE}"]

    # and it is read, not re-measured: a changed file changes the figures
    lat["prune_1.ort"][f"speedup_b64_vs_{REFERENCE}"] = 123.0
    (tmp_path / "metrics/latency.json").write_text(json.dumps(lat))
    assert sections.latency(tmp_path, "prune_1", name)["final_ort_vs_ref_b64"] == 123.0


def test_latency_without_evaluate_output_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(RuntimeError, match=r"metrics/latency.json: cannot read the evaluate stage's output") as e:
        sections.latency(tmp_path, "prune_1", "prune_1.int8w")
    assert "\n" not in str(e.value)


def test_a_project_without_outputs_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj/dvc.yaml").write_text("stages: {}\n")
    code = bench.main(["--project", str(tmp_path / "proj"), "--out", str(tmp_path / "out"), "--skip-pipeline"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shrink bench: error:") and "no pipeline outputs" in err and "\n" not in err
    assert not (tmp_path / "out/results.json").exists()


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--project", "--out", "--skip-pipeline", "--repeats", "--threads"):
        assert option in text
    assert "metrics/latency.json" in text  # says where section 2's figures come from
