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
    assert ckpt["model"] == "student" and ckpt["model_kwargs"]["widths"][-1] == 256
    assert ckpt["params"]["distill"]["temperature"] == 4.0
    assert ckpt["data"]["classes"][0] == "T-shirt/top"


def test_metrics_show_lists_every_stage(tiny_run):
    out = dvc(tiny_run, "metrics", "show", "--json").stdout
    files = {path for rev in json.loads(out).values() for path in rev["data"]}
    assert {f"metrics/{s}.json" for s in ("prepare", *TRAINING_STAGES)} <= files


def test_second_repro_does_nothing(tiny_run):
    out = dvc(tiny_run, "repro").stdout
    assert "Running stage" not in out
    assert "up to date" in out
