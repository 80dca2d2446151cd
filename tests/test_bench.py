"""The benchmark's pure parts: statistics, targets, the markdown report, the course-style folder, the
ONNX helpers. No assertion here is on a timing."""

import json

import pytest
import torch
import yaml

from shrink import bench
from shrink.config import DataParams
from shrink.data import load_split, prepare

from conftest import ROOT


def test_median_and_ratio():
    assert bench.median([3, 1, 2]) == 2
    assert bench.median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        bench.median([])
    assert bench.ratio(6, 3) == 2
    assert bench.ratio(1, 0) is None and bench.ratio(None, 1) is None and bench.ratio(1, None) is None


def test_targets_met_missed_and_by_how_much():
    fast = bench.check_target("size", 200.0)
    assert fast.met is True and fast.shortfall is None
    slow = bench.check_target("shipped_b64", 0.8)  # goal >= 1x
    assert slow.met is False and slow.shortfall == pytest.approx(1.25)
    assert bench.check_target("shipped_bytes", 300_001).met is False
    assert bench.check_target("accuracy", -0.2).met is True  # the shipped artifact gained accuracy
    late = bench.check_target("late_rerun", 0.5)  # goal <= 0.25
    assert late.met is False and late.shortfall == pytest.approx(2.0)
    assert bench.check_target("late_rerun", 0.1).met is True
    unknown = bench.check_target("size", None)
    assert unknown.met is None and unknown.as_dict()["value"] is None


def _results():
    targets = [bench.check_target("size", 200.0).as_dict(), bench.check_target("shipped_b64", 0.8).as_dict(),
               bench.check_target("shipped_bytes", 224_000).as_dict(),
               bench.check_target("late_rerun", 0.5).as_dict(), bench.check_target("data_path", None).as_dict()]
    return {
        "mode": "quick", "threads": 2, "warnings": ["busy"],
        "machine": {"cpu": "Test CPU", "cpu_count": 2, "affinity": 2, "torch": "x", "date": "today"},
        "targets": targets,
        "compression": {"teacher_bytes": 44_800_000, "shipped": "prune_5.int8", "shipped_bytes": 224_000,
                        "size_ratio": 200.0, "source": "test",
                        "rows": [{"model": "teacher", "params": 11_000_000, "bytes": 44_800_000, "test_acc": 0.9,
                                  "x_smaller": 1.0, "acc_vs_teacher": 0.0},
                                 {"model": "prune_5.int8", "runtime": "ORT int8 QDQ", "params": 200_000, "bytes": 224_000, "test_acc": 0.88,
                                  "x_smaller": 200.0, "acc_vs_teacher": -0.02}]},
        "latency": {"repeats": 3, "threads": 2, "image_size": 28, "reference": "distill.ort", "models": [
            {"name": "teacher", "runtime": "PyTorch eager fp32",
             "batch": {"1": {"min_ms": 3.0, "median_ms": 4.0, "vs_teacher": 1.0, "vs_ref": 0.5},
                       "64": {"min_ms": 30.0, "median_ms": 40.0, "vs_teacher": 1.0, "vs_ref": 0.25}}},
            {"name": "int8", "runtime": "ORT int8 QDQ",
             "batch": {"1": {"min_ms": 0.08, "median_ms": 0.1, "vs_teacher": 40.0, "vs_ref": 20.0},
                       "64": {"min_ms": None, "median_ms": None, "vs_teacher": None, "vs_ref": None}}}]},
        "data_path": {"images": 512, "batch_size": 128, "repeats": 2, "rows": [
            {"loader": "pipeline", "images_per_s": 3000.0, "pipeline_speedup": 1.0},
            {"loader": "course", "images_per_s": 1000.0, "pipeline_speedup": 3.0}]},
        "pipeline": {"params": "quick", "change": "prune.rounds.prune_3.epochs 1 -> 2", "runs": [
            {"run": "full", "seconds": 40.0, "fraction": 1.0, "stages": ["prepare", "teacher"]},
            {"run": "no-op", "seconds": 1.0, "fraction": 0.025, "stages": []}]},
    }


def test_markdown_states_each_target_and_the_miss():
    md = bench.render_markdown(_results())
    lines = md.splitlines()
    assert lines[0] == "# Benchmark (quick mode)"
    assert "> **Warning:** busy" in lines
    row = next(line for line in lines if line.startswith("| shipped artifact"))
    assert "200x" in row and "**met**" in row
    row = next(line for line in lines if line.startswith("| shipped artifact speed"))
    assert "0.8x" in row and ">= 1.0x" in row and "**missed**: needs 1.25x more" in row
    row = next(line for line in lines if line.startswith("| shipped artifact bytes"))
    assert "224,000" in row and "<= 300,000" in row and "**met**" in row
    row = next(line for line in lines if line.startswith("| rerun after"))
    assert "0.5" in row and "<= 0.25" in row and "**missed**: 2.00x over" in row
    assert "not measured" in next(line for line in lines if line.startswith("| training loop"))
    for title in ("## 1. Compression", "## 2. Inference latency", "## 3. Training data path", "## 4. Pipeline cost",
                  "## 5. Machine"):
        assert any(line.startswith(title) for line in lines), title
    assert "| prune_5.int8 | ORT int8 QDQ | 200,000 | 224 kB | 200.0 | 0.8800 | -2.00 |" in lines
    assert "| int8 | ORT int8 QDQ | 0.08 / 0.1 | — / — | 40.00x | — | 20.00x | — |" in lines
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
    md = bench.render_markdown({"mode": "default", "targets": []})
    assert "## Targets" in md and "## 1." not in md


def test_food11_folder_reads_back_through_prepare_with_the_same_labels(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    # a flat colour per class plus mild noise, so JPEG keeps the classes apart (not needed for labels)
    images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 20, (12, 3, 16, 16), generator=g)).to(torch.uint8)
    files = bench.write_food11_folder(images, labels, tmp_path / "food", val=4)
    assert [f.name for f in files] == [f"{int(y)}_{i}.jpg" for i, y in enumerate(labels)]
    assert len(list((tmp_path / "food" / "validation").glob("*.jpg"))) == 4
    assert [bench.food11_label(f) for f in files] == labels.tolist()

    prepare(DataParams(source="folder", root=str(tmp_path / "food"), image_size=16), tmp_path / "prepared", seed=0)
    train = load_split(tmp_path / "prepared", "train")
    expected = [bench.food11_label(f) for f in sorted(files)]  # prepare lists files in name order
    assert train.labels.tolist() == expected
    assert train.images.shape == (12, 3, 16, 16)


@pytest.mark.parametrize("preload", [True, False])
def test_seed_style_dataset_yields_transformed_items(tmp_path, preload):
    labels = torch.tensor([0, 1, 2])
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    bench.write_food11_folder(images, labels, tmp_path / "food")
    ds = bench.SeedStyleDataset(tmp_path / "food" / "training", bench.seed_transform(16, 2, [0.5] * 3, [0.25] * 3),
                                preload=preload)
    assert len(ds) == 3 and sorted(ds.labels) == [0, 1, 2]
    x, y = ds[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == ds.labels[1]


def test_tiny_overrides_and_the_late_change_on_the_real_params():
    params = bench.tiny_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert params["data"]["limit"] == 300 and params["data"]["image_size"] == 16
    assert all(params[s]["train"]["epochs"] == 1 for s in ("teacher", "student", "distill"))
    rounds = params["prune"]["rounds"]
    assert list(rounds) == ["prune_1", "prune_2", "prune_3"]
    assert bench.bump_last_round(params) == "prune.rounds.prune_3.epochs 1 -> 2"
    assert rounds["prune_3"]["epochs"] == 2 and rounds["prune_2"]["epochs"] == 1
    if "quantize" in params:  # every model it quantizes must still exist
        assert set(params["quantize"]["models"]) <= {"teacher", "student", "distill", *rounds}


def test_stages_ran():
    out = "Running stage 'prepare':\n> python ...\nStage 'teacher' didn't change, skipping\nRunning stage 'prune@prune_5':\n"
    assert bench.stages_ran(out) == ["prepare", "prune@prune_5"]


def test_compression_reads_the_shipped_section(tmp_path):
    ev = {"teacher": {"kind": "fp32", "runtime": "PyTorch eager fp32", "params": 10, "bytes": 45_000_000,
                      "test_acc": 0.9, "acc_vs_teacher": 0.0},
          "prune_5.uint8": {"kind": "uint8", "bytes": 180_000, "test_acc": 0.88, "acc_vs_teacher": -0.02},
          "prune_5.int8w": {"kind": "int8w", "bytes": 185_000, "test_acc": 0.881, "acc_vs_teacher": -0.019},
          "shipped": {"name": "prune_5.int8w", "artifact": "models/quantized/prune_5.int8w.onnx", "kind": "int8w",
                      "bytes": 185_000, "test_acc": 0.881, "parent": "prune_5", "acc_vs_parent": -0.001, "rule": "r"}}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps(ev))
    c = bench.compression(tmp_path)
    assert c["shipped"] == "prune_5.int8w" and c["shipped_bytes"] == 185_000
    assert c["shipped_vs_uint8"] == pytest.approx(185 / 180) and c["size_ratio"] == pytest.approx(45_000 / 185)
    assert c["shipped_acc_drop_points"] == pytest.approx(0.1)
    assert [r["model"] for r in c["rows"]] == ["teacher", "prune_5.uint8", "prune_5.int8w"]  # not "shipped"


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--project", "--out", "--skip-pipeline", "--repeats", "--threads"):
        assert option in text
