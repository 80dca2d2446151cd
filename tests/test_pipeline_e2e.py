"""One tiny end-to-end `dvc repro` of the whole pipeline in a temporary git repo."""
import json

import pytest
import torch

from conftest import dvc

pytestmark = pytest.mark.slow

TRAINING_STAGES = ("teacher", "student", "distill")


def test_repro_writes_every_stage_metrics(tiny_run):
    prep = json.loads((tiny_run / "metrics/prepare.json").read_text())
    assert prep["images"] == {"train": 300, "val": 300, "test": 300}
    for stage in TRAINING_STAGES:
        m = json.loads((tiny_run / f"metrics/{stage}.json").read_text())
        assert set(m) >= {"val_acc", "test_acc", "params", "fp32_bytes", "epochs", "wall_seconds"}
        assert 0.0 <= m["test_acc"] <= 1.0 and m["epochs"] == 1
        assert (tiny_run / f"models/{stage}.summary.txt").read_text().count("Total params") == 1
        assert (tiny_run / f"dvclive/{stage}/metrics.json").is_file()
    assert json.loads((tiny_run / "metrics/student.json").read_text())["params"] == 256_779 - 11 * 257 + 10 * 257


def test_checkpoints_load_weights_only_with_their_params(tiny_run):
    ckpt = torch.load(tiny_run / "models/distill.pt", weights_only=True)
    assert ckpt["model"] == "studentnet" and ckpt["model_kwargs"]["widths"][-1] == 256
    assert ckpt["params"]["distill"]["temperature"] == 2.0
    assert ckpt["data"]["classes"][0] == "T-shirt/top"


def test_metrics_show_lists_every_stage(tiny_run):
    out = dvc(tiny_run, "metrics", "show", "--json").stdout
    files = {path for rev in json.loads(out).values() for path in rev["data"]}
    assert {f"metrics/{s}.json" for s in ("prepare", *TRAINING_STAGES)} <= files


def test_second_repro_does_nothing(tiny_run):
    out = dvc(tiny_run, "repro").stdout
    assert "Running stage" not in out
    assert "up to date" in out


def test_quantize_and_evaluate_outputs(tiny_run):
    ev = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    fp32 = ["teacher", "student", "distill", "prune_1", "prune_2", "prune_3"]
    names = fp32 + [f"{m}.ort" for m in fp32]
    names += [f"{m}.{k}" for m in ("distill", "prune_3") for k in ("fp16", "uint8", "int8", "int8w")]
    assert list(ev) == names + ["shipped"]
    shipped = ev["shipped"]
    assert shipped["parent"] == "prune_3" and shipped["kind"] in ("fp16", "uint8", "int8", "int8w")
    assert shipped["artifact"].startswith("models/quantized/prune_3.") and shipped["rule"].startswith("auto")
    assert shipped["bytes"] == (tiny_run / shipped["artifact"]).stat().st_size == ev[shipped["name"]]["bytes"]
    assert ev["prune_3.int8w"]["bytes"] <= 1.1 * ev["prune_3.uint8"]["bytes"]
    assert ev["teacher"]["size_ratio_vs_teacher"] == 1.0
    assert ev["distill.uint8"]["bytes"] <= 300_000 < ev["distill"]["bytes"]
    assert ev["prune_3.uint8"]["bytes"] < ev["distill.uint8"]["bytes"]
    assert ev["prune_3"]["params"] < ev["prune_1"]["params"] < ev["distill"]["params"]
    lat = json.loads((tiny_run / "metrics/latency.json").read_text())
    assert lat["teacher"]["speedup_b64_vs_teacher"] == 1.0 and lat["distill.int8"]["latency_b1_ms"] > 0
    assert lat["distill.ort"]["speedup_b64_vs_distill.ort"] == 1.0 and lat["shipped"]["name"] == shipped["name"]
    report = (tiny_run / "report.md").read_text()
    assert all(f"`{n}`" in report for n in names)
    assert all(label in report for label in ("PyTorch eager fp32", "ORT fp32", "ORT int8 QDQ", "ORT fp32 (int8 weights)"))
    assert (tiny_run / "plots/models.csv").read_text().count("\n") == len(names) + 1
    assert (tiny_run / "plots/prune.csv").read_text().splitlines()[0] == "round,model,width,params,test_acc,val_acc_after_cut"
    assert (tiny_run / "predictions.csv").read_text() == "Id,Category\n"  # Fashion-MNIST has no unlabeled split


def test_food11_folder_end_to_end_with_predictions(tmp_path):
    """The whole pipeline on a Food-11-layout folder: predictions.csv and `shrink predict` from the shipped artifact."""
    from conftest import make_food11, make_project, run

    root = make_food11(tmp_path / "food-11", classes=3, per_class=12, evaluation=5)

    def edit(p):
        p["data"].update(source="folder", root=str(root), limit=None)

    proj = make_project(tmp_path / "proj", edit)
    dvc(proj, "repro")
    rows = (proj / "predictions.csv").read_text().splitlines()
    assert rows[0] == "Id,Category"
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"]  # the course's Id: the integer index
    assert all(r.split(",")[1] in {"0", "1", "2"} for r in rows[1:])
    out = run(["shrink", "predict", "--model", "models/quantized/prune_3.uint8.pt", str(root / "evaluation")], proj)
    printed = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(printed) == 5 and all(cls in {"0", "1", "2"} for _, cls in printed)
    out = run(["shrink", "predict", str(root / "evaluation")], proj)  # default: the shipped artifact
    shipped = [line.split("\t") for line in out.stdout.splitlines()]
    assert [cls for _, cls in shipped] == [r.split(",")[1] for r in rows[1:]]  # predictions.csv used it too
