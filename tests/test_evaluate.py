"""The measurement layer (shrink.runtime), evaluate's params and the course's predictions.csv (no timing asserted;
the ship rule is tests/test_ship.py's)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from shrink.config import EvaluateParams, ParamsError, from_dict
from shrink.report import predictions_csv, submission_id
from shrink.models import StudentNet
from shrink.quantize import export_onnx
from shrink.runtime import OrtModel, busy_warnings, interleaved, load_runtime, others_busy

from conftest import ROOT, assert_same_logits

# ---------------------------------------------------------------- runtime


def test_interleaved_round_robin_order_counts_and_machine_state():
    order = []
    calls = {k: (lambda k=k: order.append(k)) for k in "abc"}
    timing = interleaved(calls, repeats=4, threads=1, warmup=1, min_time=0.0)
    assert {k: len(v) for k, v in timing.times.items()} == {"a": 4, "b": 4, "c": 4}
    assert order[3:] == list("abc" "bca" "cab" "abc")  # after one warm-up call each; the order rotates
    assert timing.min_ms("a") <= timing.median_ms("a")
    setup = timing.setup()
    assert setup["threads"] == 1 and setup["repeats"] == 4 and "load_before" in setup and "load_after" in setup
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    with pytest.raises(ValueError, match="repeats"):
        interleaved(calls, repeats=0, threads=1)


def test_busy_warning():
    assert busy_warnings(2, load=0.1, cores=2) == []
    assert busy_warnings(1, load=3.0, cores=2) == []
    assert "busy" in busy_warnings(2, load=2.0, cores=2)[0]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat on this OS")
def test_others_busy_sees_another_process_and_not_this_one():
    """A child spinning on one core counts as other work; this process's own busy loop does not."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        assert others_busy(1.0) >= 0.5
    finally:
        child.kill()
        child.wait(timeout=10)
    before = others_busy(0.5)  # whatever else runs on this machine now
    own = threading.Thread(target=lambda: [None for _ in range(30_000_000)])  # ~1 s of this process's CPU
    own.start()
    busy = others_busy(0.5)
    own.join()
    assert busy is not None and busy < before + 0.6, (before, busy)  # its own thread is subtracted


def test_fp32_onnx_export_runs_in_ort_like_torch(tmp_path):
    torch.manual_seed(0)
    model = StudentNet(num_classes=4).eval()
    meta = {"model": "studentnet", "model_kwargs": {"widths": model.widths}, "num_classes": 4,
            "data": {"classes": list("abcd"), "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": 16}}
    export_onnx(model, torch.zeros(1, 3, 16, 16), tmp_path / "s.onnx", meta={**meta, "kind": "fp32"})
    run = load_runtime(tmp_path / "s.onnx", threads=1)
    assert run.kind == "fp32" and run.label == "ORT fp32" and run.meta == meta
    assert not run.model.fold_weights
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16)
        # ORT folds each BatchNorm into its conv's weights: measured up to 3.3e-6 of the largest |logit| (5 seeds,
        # Zen 4, both ISA paths), so 30x that; a misexported graph is off by far more
        assert_same_logits(run(x), model(x).detach(), tol=1e-4, what=f"ORT fp32 against PyTorch, batch {batch}")
    with pytest.raises(ValueError, match="metadata"):  # an ONNX file without our meta is refused by name
        export_onnx(model, torch.zeros(1, 3, 16, 16), tmp_path / "bare.onnx")
        load_runtime(tmp_path / "bare.onnx")
    assert isinstance(OrtModel(tmp_path / "bare.onnx").meta, dict)


# ---------------------------------------------------------------- params


@pytest.mark.parametrize("kw, key", [({"ship": "int4"}, "evaluate.ship"), ({"repeats": 0}, "evaluate.repeats"),
                                     ({"threads": 0}, "evaluate.threads"), ({"warmup": -1}, "evaluate.warmup"),
                                     ({"batch_sizes": []}, "evaluate.batch_sizes"),
                                     ({"max_drop": -1.0}, "evaluate.max_drop"),
                                     ({"objective": "cheapest"}, "evaluate.objective"),
                                     ({"max_bytes": 0}, "evaluate.max_bytes")])
def test_evaluate_params_name_the_bad_key(kw, key):
    with pytest.raises(ParamsError, match=r"params\.yaml: " + key.replace(".", r"\.") + ": must be"):
        from_dict(EvaluateParams, kw, "evaluate")
    assert EvaluateParams().ship == "auto" and EvaluateParams(ship="int8w").ship == "int8w"


def test_invalid_ship_fails_before_evaluate_writes_anything(tmp_path):
    """Issue 12 item 6: a bad evaluate.ship is an error naming the key, and no output is touched."""
    (tmp_path / "params.yaml").write_text("evaluate:\n  ship: fastest\n")
    outs = {"--metrics": "m/summary.json", "--table": "m/evaluate.json", "--latency": "m/latency.json",
            "--plots": "plots", "--report": "report.md", "--predictions": "predictions.csv", "--charts": "charts",
            "--shipped": "shipped"}
    proc = subprocess.run([sys.executable, str(ROOT / "stages/evaluate.py"), "--params", "params.yaml",
                           "--data", "no-data", "--models", "no-models",
                           "--live", "dvclive", "--plan", "no-plan", "--curve", "no-curve.json",
                           *[x for kv in outs.items() for x in kv]],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"),
                                                                              "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "evaluate.ship" in proc.stderr and "StopIteration" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# ---------------------------------------------------------------- predictions.csv


def test_predictions_csv_ids_are_course_indices_and_quoted():
    """Issue 12 items 10 and 12: the csv module quotes what needs it; Id is the integer index (0000 -> 0)."""
    assert submission_id("0000") == "0" and submission_id("0123") == "123" and submission_id("img_7") == "img_7"
    text = predictions_csv(["0000", "0001", "a,b", 'say "hi"\nthere'], torch.tensor([3, 1, 4, 0]))
    assert text.splitlines()[:3] == ["Id,Category", "0,3", "1,1"]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["Id", "Category"], ["0", "3"], ["1", "1"], ["a,b", "4"], ['say "hi"\nthere', "0"]]


# ---------------------------------------------------------------- comparisons with their intervals


def test_report_states_each_step_and_the_shipped_artifact_with_its_interval_and_no_gain_within_noise():
    """report.md's "what each step bought" and summary.json's ``vs``: every difference with its paired interval;
    a gain only when the interval excludes zero (stats.Paired.verdict), whatever the sign of the difference."""
    from shrink.report import headline, steps_markdown, vs_dict
    from shrink.stats import paired

    ref = [True] * 900 + [False] * 100
    small_gain = paired([True] * 903 + [False] * 97, ref)  # +0.3 points: within noise
    big_gain = paired([True] * 1000, ref)  # +10 points: a gain
    text = steps_markdown([("KD", "distill", "student", small_gain)],
                          {"control": big_gain, "distill": small_gain})
    assert "## What each step bought (test split, paired 95% intervals)" in text
    assert f"- KD (`distill` − `student`): {small_gain.text()}, within noise" in text
    assert small_gain.text().startswith("+0.30 pt [-") and small_gain.low < 0  # a positive difference, not a gain
    assert f"`control` {big_gain.text()} (gain), `distill` {small_gain.text()} (within noise)." in text
    # one interval, one text: the shipped line (from evaluate.json's dict) as the list above (from the Paired);
    # re-rounding the dict's 4-digit figures would print this one as [-0.30, +0.47]
    edge = dataclasses.replace(small_gain, low=-0.30504, high=0.46504)
    assert vs_dict(edge)["text"] == edge.text() == "+0.30 pt [-0.31, +0.47]"
    ev = {"shipped": {"name": "prune_2.int8w", "bytes": 1, "val_acc": 0.9, "test_acc": 0.9,
                      "test_vs": {"control": vs_dict(small_gain)}}}
    assert headline(ev, 10)["shipped"]["vs"] == {"control": {"pt": 0.3, "low": small_gain.as_dict()["low_pt"],
                                                             "high": small_gain.as_dict()["high_pt"]}}
