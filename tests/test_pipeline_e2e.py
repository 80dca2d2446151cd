"""The tiny end-to-end `dvc repro` (the session's ``tiny_run``): every stage learns, every artifact keeps
its fp32 parent's predictions, predictions.csv answers the labelled evaluation images, and a corrupted
weight or quantization scale fails the same checks.

The tiny data (conftest.make_tiny_images) has 4 classes, so chance is 0.25; test and val are 48 images
each. Measured on this data: every model and artifact at 0.9 or more (see MIN_ACC).
"""
import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, TINY_CLASSES, TINY_EVAL, TINY_LEARN, TINY_SCRATCH, clear_top1, git, run, tiny_eval_label
from shrink.checkpoint import model_from_checkpoint
from shrink.config import scratch_model
from shrink.formats import get_format, list_formats
from shrink.models import build_model
from shrink.report import PRUNE_FIELDS
from shrink.runtime import load_runtime

pytestmark = pytest.mark.slow

TRAINING_STAGES = ("teacher", "student", "distill")
ROUNDS = ("prune_1", "prune_2", "prune_3")
TWINS = tuple(scratch_model(r) for r in TINY_SCRATCH)  # the rounds' from-scratch twins, quantized (TINY_QUANTIZE)
# whose artifacts may ship (evaluate.ship_sources: the reference first, the twins after the rounds)
SOURCES = ("control", "distill", *ROUNDS, *TWINS)
KINDS = tuple(list_formats())
MIN_ACC = 0.75  # 3x chance: a model at chance (0.25) or one that lost half its skill fails
AGREE = 0.9  # top-1 agreement of an artifact with its fp32 parent on the 48 test images (at most 4 may differ)


def load_test(proj: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The prepared test split, normalised here from meta.json (not with shrink's normalizer), and the meta."""
    meta = json.loads((proj / "data/prepared/meta.json").read_text())
    split = torch.load(proj / "data/prepared/test.pt", weights_only=True)
    mean, std = (torch.tensor(meta[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (split["images"].float() / 255 - mean) / std, split["labels"], meta


def predictions(run_model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return run_model(x).argmax(1)


def check_against_parent(artifact, parent, x: torch.Tensor, y: torch.Tensor) -> None:
    """The check every artifact must pass: it learned (MIN_ACC) and predicts what its fp32 parent predicts (AGREE)."""
    pa, pp = predictions(artifact, x), predictions(parent, x)
    acc, agree = (pa == y).float().mean().item(), (pa == pp).float().mean().item()
    assert acc >= MIN_ACC, f"{artifact}: test acc {acc:.3f} < {MIN_ACC}"
    assert agree >= AGREE, f"{artifact}: agrees with its fp32 parent on {agree:.3f} of the test images < {AGREE}"


# ------------------------------------------------------------------ every stage learns


def test_every_stage_learns_and_writes_its_metrics(tiny_run):
    assert json.loads((tiny_run / "metrics/prepare.json").read_text()) == {"images": 288 + TINY_EVAL, "classes": 4,
                                                                          "skipped": 0}
    prep = json.loads((tiny_run / "data/prepared/prepare.json").read_text())  # the details, a plain output
    assert prep["images"] == {"train": 192, "val": 48, "test": 48, "evaluation": TINY_EVAL}
    assert prep["classes"] == 4 and prep["per_class"]["test"] == {c: 12 for c in TINY_CLASSES}
    for stage in TRAINING_STAGES:
        headline = json.loads((tiny_run / f"metrics/{stage}.json").read_text())
        m = json.loads((tiny_run / f"models/{stage}.run.json").read_text())
        assert set(headline) == {"test_acc", "test_loss", "macs"} and headline == {k: m[k] for k in headline}
        assert set(m) >= {"val_acc", "test_acc", "val_loss", "test_loss", "macs", "params", "fp32_bytes", "epochs",
                          "wall_seconds"}
        assert m["test_acc"] >= MIN_ACC and m["val_acc"] >= MIN_ACC and m["macs"] > m["params"], (stage, m)
        assert m["epochs"] == TINY_LEARN[stage][1]
        assert (tiny_run / f"models/{stage}.summary.txt").read_text().count("Total params") == 1
        assert (tiny_run / f"dvclive/{stage}/metrics.json").is_file()
    for r in ROUNDS:  # each pruning round keeps what distill learned
        m = json.loads((tiny_run / f"models/{r}.run.json").read_text())
        assert m["test_acc"] >= MIN_ACC and m["epochs"] == 1, (r, m)
    # StudentNet: 256,779 parameters with Food-11's 11 outputs; each class fewer removes a 256-input row
    assert json.loads((tiny_run / "models/student.run.json").read_text())["params"] == 256_779 - 7 * 257


def test_scratch_trains_the_rounds_architecture_anew(tiny_run):
    """scratch@<round>: the round's channels, none of its (or distill's) weights, distill's epochs plus the
    round's, distill's loss; the report sets the round against it."""
    for r in TINY_SCRATCH:
        cut, new = (torch.load(tiny_run / f"models/{m}.pt", weights_only=True) for m in (r, scratch_model(r)))
        assert new["model_kwargs"] == cut["model_kwargs"] and new["model"] == cut["model"]
        assert {k: v.shape for k, v in new["state_dict"].items()} == {k: v.shape for k, v in cut["state_dict"].items()}
        with torch.random.fork_rng():  # the stage's init: its seed, then the net built (nothing draws in between)
            torch.manual_seed(new["params"]["seed"])
            init = build_model(new["model"], new["num_classes"], **new["model_kwargs"]).state_dict()
        # trained from that init, not from the cut's weights: nearer the one than the other, weight for weight
        dist = {k: (new["state_dict"][k] - init[k]).norm() / (new["state_dict"][k] - cut["state_dict"][k]).norm()
                for k in init if init[k].is_floating_point() and "running" not in k and init[k].dim() > 1}
        assert len(dist) >= 10 and max(dist.values()) < 0.7, dist  # measured <= 0.33; inherited: >> 1
        m = json.loads((tiny_run / f"models/scratch_{r}.run.json").read_text())
        assert m["epochs"] == TINY_LEARN["distill"][1] + 1 and m["round"] == r and m["test_acc"] >= MIN_ACC
        assert m["width"] == json.loads((tiny_run / f"models/{r}.run.json").read_text())["width"]
        assert new["params"]["prune"]["scratch"] == r and new["params"]["distill"]["alpha"] == 0.5
        assert json.loads((tiny_run / f"metrics/prune/scratch_{r}.json").read_text())["test_acc"] == m["test_acc"]
        assert f"(`{r}` − `scratch_{r}`): " in (tiny_run / "report.md").read_text()


def test_checkpoints_load_weights_only_with_their_params(tiny_run):
    ckpt = torch.load(tiny_run / "models/distill.pt", weights_only=True)
    assert ckpt["model"] == "studentnet" and ckpt["model_kwargs"]["widths"][-1] == 256
    assert ckpt["params"]["distill"]["temperature"] == 2.0
    assert ckpt["data"]["classes"] == list(TINY_CLASSES)


# ------------------------------------------------------------------ evaluate: counts, artifacts, schemas


def test_evaluate_accuracy_is_an_independent_count(tiny_run):
    """evaluate.json's test_acc of each fp32 model = hits counted here over the test split / its size,
    and the training stage's own figure. Here the images are normalised with other arithmetic and run as one
    batch, so other kernels: an image whose top two logits are within kernel noise (conftest.clear_top1)
    may count either way; every other image must count as it does there."""
    ev = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    x, y, _ = load_test(tiny_run)
    assert len(y) == 48
    for name in (*TRAINING_STAGES, *ROUNDS):
        model = model_from_checkpoint(tiny_run / f"models/{name}.pt").eval()
        with torch.inference_mode():
            logits = model(x)
        clear = clear_top1(logits)
        sure, unsure = int(((logits.argmax(1) == y) & clear).sum()), int((~clear).sum())
        counts = {round(hits / 48, 6) for hits in range(sure, sure + unsure + 1)}
        assert ev[name]["test_acc"] in counts, (name, sure, unsure)
        folder = "metrics/prune" if name in ROUNDS else "metrics"
        assert json.loads((tiny_run / f"{folder}/{name}.json").read_text())["test_acc"] in counts, (name, sure, unsure)


def test_every_artifact_learned_and_agrees_with_its_fp32_parent(tiny_run):
    ev = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    x, y, _ = load_test(tiny_run)
    for name, row in ev.items():
        if name != "shipped":
            assert row["test_acc"] >= MIN_ACC, (name, row)
    for parent in ("distill", "prune_3"):
        fp32 = load_runtime(tiny_run / f"models/{parent}.pt")
        for kind in KINDS:
            art = next((tiny_run / "models/quantized").glob(f"{parent}.{kind}.*"))
            check_against_parent(load_runtime(art), fp32, x, y)
            assert abs(ev[f"{parent}.{kind}"]["acc_vs_source"]) <= 1 - AGREE, (parent, kind)


def test_the_prune_sweep_runs_what_the_prune_stages_run(tiny_run, tmp_path):
    """scripts/prune_sweep.py and the prune stages call one ``rounds.run_round``: given the stages' params, chain
    and torch threads, its rounds have the stages' figures and int8w files, and it leaves nothing in the project."""
    rounds = yaml.safe_load((tiny_run / "params.yaml").read_text())["prune"]["rounds"]
    assert rounds["prune_2"]["parent"] == "prune_1" and rounds["prune_1"]["parent"] == "distill"
    widths = ",".join(str(json.loads((tiny_run / f"search/plan/{r}.json").read_text())["width"]) for r in ROUNDS[:2])
    epochs = ",".join(str(rounds[r]["epochs"]) for r in ROUNDS[:2])
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/prune_sweep.py"), "--widths", widths, "--epochs", epochs,
                           "--threads", "0", "--out", str(tmp_path / "sweep.jsonl")], cwd=tiny_run, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(tiny_run / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and {r["criterion"] for r in rows} == {"bn_scale"}
    for row, name in zip(rows, ROUNDS):
        m = json.loads((tiny_run / f"models/{name}.run.json").read_text())
        assert (row["params"], row["channels"]) == (m["params"], m["channels"]), name
        assert [row[k] for k in ("val_after_cut", "val_acc", "test_acc")] == [
            round(m[k], 4) for k in ("val_acc_after_cut", "val_acc", "test_acc")], name
        assert row["int8w_bytes"] == (tiny_run / f"models/quantized/{name}.int8w.onnx").stat().st_size, name
    assert git(tiny_run, "status", "--porcelain") == "" and not list(tiny_run.glob(".shrink/resume/*round*"))


def corrupt_uint8_scale(path: Path, out: Path) -> None:
    """The min/max of the first quantized tensor (the first conv's weight) swapped: a sign error in a scale."""
    obj = torch.load(path, weights_only=True)
    assert obj["index"][0][2] == "q8" and obj["index"][0][0].endswith("weight")
    obj["minmax"][0] = obj["minmax"][0].flip(0)
    torch.save(obj, out)


def corrupt_int8_scale(path: Path, out: Path) -> None:
    """The scale of the first conv weight's DequantizeLinear multiplied by 4 (a mis-scaled quantizer)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    first_conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    dq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == first_conv.input[1])
    scale = inits[dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(4), scale.name))
    onnx.save(proto, str(out))


def corrupt_pruned_weight(path: Path, out: Path) -> None:
    """A pruner that kept the wrong channels: one conv's output channels in reverse order (its BatchNorm and the
    next layer still expect the original order)."""
    ckpt = torch.load(path, weights_only=True)
    key = "cnn.1.3.weight"  # the first pointwise conv
    ckpt["state_dict"][key] = ckpt["state_dict"][key].flip(0).contiguous()
    torch.save(ckpt, out)


@pytest.mark.parametrize("artifact,parent,corrupt", [
    ("quantized/prune_3.uint8.pt", "prune_3", corrupt_uint8_scale),
    ("quantized/prune_3.int8.onnx", "prune_3", corrupt_int8_scale),
    ("prune_3.pt", "prune_2", corrupt_pruned_weight),
])
def test_a_corrupted_weight_or_scale_fails_the_check(tiny_run, tmp_path, artifact, parent, corrupt):
    """The mutation check: the accuracy / agreement check above catches a broken quantizer or pruner."""
    x, y, _ = load_test(tiny_run)
    good = tiny_run / "models" / artifact
    fp32 = load_runtime(tiny_run / f"models/{parent}.pt")
    if parent == "prune_2":  # a pruned round is checked on accuracy alone: fine-tuning may change predictions
        assert (predictions(load_runtime(good), x) == y).float().mean() >= MIN_ACC
    else:
        check_against_parent(load_runtime(good), fp32, x, y)
    bad = tmp_path / Path(artifact).name
    corrupt(good, bad)
    with pytest.raises(AssertionError):
        if parent == "prune_2":
            assert (predictions(load_runtime(bad), x) == y).float().mean() >= MIN_ACC
        else:
            check_against_parent(load_runtime(bad), fp32, x, y)


def test_quantize_and_evaluate_outputs(tiny_run):
    ev = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    fp32 = ["teacher", "student", "distill", "control", *ROUNDS, *TWINS]
    names = fp32 + [f"{m}.ort" for m in fp32]
    names += [f"{m}.{k}" for m in ("distill", "control", *ROUNDS, *TWINS) for k in KINDS]  # every round is quantized
    assert list(ev) == names + ["shipped"]
    shipped = ev["shipped"]
    assert shipped["parent"] in SOURCES and shipped["kind"] in KINDS and shipped["rule"] == "auto"
    assert shipped["artifact"] == f"models/quantized/{shipped['parent']}.{get_format(shipped['kind']).suffix}"
    assert shipped["bytes"] == (tiny_run / shipped["artifact"]).stat().st_size == ev[shipped["name"]]["bytes"]
    assert shipped["test_acc"] == ev[shipped["name"]]["test_acc"] >= MIN_ACC
    assert shipped["val_acc"] == ev[shipped["name"]]["val_acc"] and shipped["reference"] == "control"
    # the control: distill fine-tuned as a round is, not cut (its parameters and MACs are distill's)
    control = json.loads((tiny_run / "models/control.run.json").read_text())
    assert ev["control"]["params"] == ev["distill"]["params"] and control["width"] == 1.0
    assert control["macs"] == json.loads((tiny_run / "models/distill.run.json").read_text())["macs"]
    assert control["epochs"] == json.loads((tiny_run / "models/prune_1.run.json").read_text())["epochs"]
    assert ev["control"]["test_acc"] >= MIN_ACC
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
    prune = list(csv.DictReader(io.StringIO((tiny_run / "plots/prune.csv").read_text())))
    assert [r["model"] for r in prune] == ["distill", *ROUNDS] and list(prune[0]) == PRUNE_FIELDS
    for r in prune:  # the trade-off curve: each round's artifact of the shipped kind
        row = ev[f"{r['model']}.{shipped['kind']}"]
        assert (int(r["bytes"]), float(r["test_acc"]), float(r["val_acc"])) == (row["bytes"], row["test_acc"], row["val_acc"])
    assert "charts/tradeoff.png" in report
    # every comparison with its interval: what each step bought, and the shipped artifact against each model
    assert "## What each step bought (test split, paired 95% intervals)" in report
    for a, b in (("distill", "student"), ("control", "distill"), *((r, "control") for r in ROUNDS)):
        assert f"(`{a}` − `{b}`): " in report, (a, b)
    for m in ("teacher", "student", "distill", "control"):
        d = shipped["test_vs"][m]
        assert d["n"] == 48 and d["low_pt"] <= d["diff_pt"] <= d["high_pt"] and d["confidence"] == 0.95
        assert d["verdict"] == ("gain" if d["low_pt"] > 0 else "loss" if d["high_pt"] < 0 else "within noise")
        assert d["diff_pt"] == pytest.approx(100 * (shipped["test_acc"] - ev[m]["test_acc"]), abs=1e-3)


def test_metrics_schemas(tiny_run):
    """Keys and types of metrics/quantize/*.json, evaluate.json and latency.json (what readers and `dvc metrics
    diff` rely on)."""
    for model in SOURCES:
        q = json.loads((tiny_run / f"metrics/quantize/{model}.json").read_text())
        assert set(q) == {"source", *(f"{k}_bytes" for k in KINDS)}, q
        assert q["source"] == f"models/{model}.pt"
        for kind in KINDS:
            assert type(q[f"{kind}_bytes"]) is int
            assert q[f"{kind}_bytes"] == (tiny_run / f"models/quantized/{model}.{get_format(kind).suffix}").stat().st_size
    ev = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    row_types = {"kind": str, "runtime": str, "test_acc": float, "val_acc": float, "params": int, "bytes": int,
                 "size_ratio_vs_teacher": float, "acc_vs_teacher": float}
    for name, row in ev.items():
        if name == "shipped":
            continue
        expected = {**row_types, **({"acc_vs_source": float} if "." in name else {})}
        assert set(row) == set(expected), (name, sorted(row))
        assert all(isinstance(row[k], t) and (t is not int or type(row[k]) is int) for k, t in expected.items()), (name, row)
        assert 0 < row["test_acc"] <= 1 and row["bytes"] > 0 and row["params"] > 0
    assert set(ev["shipped"]) == {"name", "artifact", "kind", "runtime", "bytes", "val_acc", "test_acc", "parent",
                                  "acc_vs_parent", "reference", "test_acc_vs_reference", "test_vs", "rule"} | (
                                  {"note"} if "note" in ev["shipped"] else set())
    lat = json.loads((tiny_run / "metrics/latency.json").read_text())
    assert list(lat) == [n for n in ev if n != "shipped"] + ["_setup", "shipped"]
    for name, row in lat.items():
        if name.startswith("_") or name == "shipped":
            continue
        want = {"runtime"} | {f"{s}_b{b}{t}" for b in (1, 64) for s, t in
                              (("latency", "_ms"), ("min", "_ms"), ("speedup", "_vs_teacher"), ("speedup", "_vs_distill.ort"))}
        assert set(row) == want, (name, sorted(row))
        assert all(isinstance(v, float) and v > 0 for k, v in row.items() if k != "runtime"), (name, row)
    assert {"threads", "repeats", "warmup", "image_size", "latency_machine"} <= set(lat["_setup"])
    assert {"name", "latency_rule_applied", "latency_verdicts", "min_b1_ms", "min_b64_ms"} <= set(lat["shipped"])
    assert set(lat["shipped"]["latency_verdicts"]) == {f"{m}.{k}" for m in SOURCES for k in KINDS}
    # the evaluate stage's only metrics file: deterministic figures, taken from the rows above
    summary = json.loads((tiny_run / "metrics/summary.json").read_text())
    shipped = ev["shipped"]
    assert summary == {"shipped": {
        "name": shipped["name"], "bytes": shipped["bytes"], "val_acc": shipped["val_acc"], "test_acc": shipped["test_acc"],
        "macs": json.loads((tiny_run / f"models/{shipped['parent']}.run.json").read_text())["macs"],
        "vs": {m: {"pt": d["diff_pt"], "low": d["low_pt"], "high": d["high_pt"]} for m, d in shipped["test_vs"].items()}}}
    assert list(summary["shipped"]["vs"]) == ["teacher", "student", "distill", "control"]


def test_no_choice_reads_a_test_label(tiny_run):
    """What ships is decided on validation: with the test split's labels permuted, every accuracy on the test
    split changes and the choice and every verdict stay the same (same timings)."""
    from shrink.config import load_params
    from shrink.data import load_meta, load_split
    from shrink.evaluate import ship_sources, ship_terms
    from shrink.measure import collect, compare, ship_table
    from shrink.ship import choose

    params = load_params(tiny_run / "params.yaml")
    p = dataclasses.replace(params.evaluate, repeats=1, warmup=0)
    data = tiny_run / "data/prepared"
    meta, test, val = load_meta(data), load_split(data, "test"), load_split(data, "val")
    shuffled = dataclasses.replace(test, labels=test.labels[torch.randperm(len(test.labels),
                                                                            generator=torch.Generator().manual_seed(0))])
    assert (shuffled.labels != test.labels).float().mean() > 0.5
    with tempfile.TemporaryDirectory() as tmp:
        entries = collect(tiny_run / "models", params.fp32_models, params.quantized_models, 1, Path(tmp))
        m = compare(entries, test, meta, p, val, "distill.ort")
        # the same timings: only the test split differs
        shuffled_m = dataclasses.replace(compare(entries, shuffled, meta, p, val, "distill.ort"), lat=m.lat)
    sources = ship_sources(params)
    assert sources == list(SOURCES)
    assert shuffled_m.ev["distill"]["test_acc"] < m.ev["distill"]["test_acc"] - 0.3  # the test figures did move
    tables = [ship_table(entries, x, p.batch_sizes) for x in (m, shuffled_m)]
    assert tables[0] == tables[1]  # what the rule reads: validation figures, each image's correctness, timings
    row = tables[0]["prune_1.int8w"]
    assert len(row.correct) == len(val.labels) and sum(row.correct) / len(row.correct) == pytest.approx(row.acc, abs=1e-6)
    assert choose(tables[1], sources, ship_terms(p), p.objective) == choose(tables[0], sources, ship_terms(p), p.objective)
    # and the stage's own choice is among the candidates this rule considers
    assert json.loads((tiny_run / "metrics/evaluate.json").read_text())["shipped"]["parent"] in sources


# ------------------------------------------------------------------ predictions from the shipped artifact


def test_predictions_csv_answers_the_labelled_evaluation_images(tiny_run):
    """predictions.csv: the course's Id and class index for each evaluation/ image, right for (nearly) every one,
    and exactly what `shrink predict` says with the shipped artifact."""
    rows = list(csv.reader(io.StringIO((tiny_run / "predictions.csv").read_text())))
    assert rows[0] == ["Id", "Category"]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(TINY_EVAL)]  # the course's Id: the integer index
    truth = [tiny_eval_label(i) for i in range(TINY_EVAL)]
    assert len(set(truth)) == len(TINY_CLASSES)
    answered = [int(r[1]) for r in rows[1:]]
    assert sum(a == t for a, t in zip(answered, truth)) >= 0.8 * TINY_EVAL, (answered, truth)

    folder = tiny_run / "images/evaluation"
    out = run(["shrink", "predict", str(folder)], tiny_run)  # default: the shipped artifact
    printed = list(csv.reader(io.StringIO(out.stdout), delimiter="\t"))
    assert [Path(p).name for p, _ in printed] == [f"{i:04d}.png" for i in range(TINY_EVAL)]
    assert [TINY_CLASSES.index(c) for _, c in printed] == answered  # predictions.csv came from the shipped artifact
    # another artifact, named with --model: it learned too, and names the classes
    out = run(["shrink", "predict", "--model", "models/quantized/prune_3.uint8.pt", str(folder)], tiny_run)
    other = [TINY_CLASSES.index(c) for _, c in csv.reader(io.StringIO(out.stdout), delimiter="\t")]
    assert sum(a == t for a, t in zip(other, truth)) >= 0.8 * TINY_EVAL, (other, truth)


@pytest.mark.parametrize("artifact", ["models/quantized/prune_3.uint8.pt", "models/quantized/prune_3.int8w.onnx"])
def test_predict_on_a_truncated_model_file(tiny_run, tmp_path, artifact):
    """A model file cut short (an interrupted copy): one error line naming the file, exit 2, no traceback."""
    whole = (tiny_run / artifact).read_bytes()
    cut = tmp_path / Path(artifact).name
    cut.write_bytes(whole[: len(whole) // 2])
    out = run(["shrink", "predict", "--model", str(cut), str(tiny_run / "images/evaluation")], tmp_path, check=False)
    assert out.returncode == 2 and out.stdout == "", out
    assert "Traceback" not in out.stderr and str(cut) in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("shrink predict: error: --model: "), out.stderr
