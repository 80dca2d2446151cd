"""The one front door for params (config.load_params -> Params) and the one stage entry point (shrink.stage)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from shrink.checkpoint import ArtifactError, model_from_checkpoint, save_checkpoint
from shrink.config import Params, ParamsError, PruneParams, TrainParams, auto_nproc, load_params, validate
from shrink.models import PRUNABLE_BLOCKS, StudentNet
from shrink.stage import StageParams

ROOT = Path(__file__).resolve().parents[1]


def test_the_repo_params_load_into_one_typed_object():
    p = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert isinstance(p, Params) and dataclasses.is_dataclass(p.prune.finetune.train)
    assert list(p.prune.rounds) == list(raw["prune"]["rounds"])
    assert p.prune.rounds["prune_2"].width == raw["prune"]["rounds"]["prune_2"]["width"]
    assert p.fp32_models == ["teacher", "student", "distill", "control", *raw["prune"]["rounds"]]
    assert tuple(p.prune.blocks) == PRUNABLE_BLOCKS  # config's default blocks are the registry's
    assert p.prune.criterion == PruneParams().criterion == "bn_scale"  # the course's, in params.yaml and the default


def test_the_defaults_are_the_repo_params():
    """One truth: every dataclass default is params.yaml's value, so code (and a test) that builds ``Params()`` or
    a section's default runs what ships. Not the rounds: DVC makes the prune stages from params.yaml's rounds
    itself (foreach), so a default round would be one that no stage runs."""
    shipped = load_params(ROOT / "params.yaml")
    default = Params()
    assert default.prune.rounds == {} and shipped.prune.rounds
    rounds = dataclasses.replace(default.prune, rounds=shipped.prune.rounds)
    assert dataclasses.replace(default, prune=rounds) == shipped
    assert TrainParams() == shipped.student.train  # the class's own defaults: the student's section


def test_the_control_trains_as_long_as_a_round():
    """The control is the equal-budget alternative: params.yaml (and the tiny projects) give it every round's
    epochs, so a round and the control differ by the cut alone; and it fine-tunes an unpruned model."""
    from shrink.bench.project import tiny_overrides

    for raw in (yaml.safe_load((ROOT / "params.yaml").read_text()),
                tiny_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()))):
        p = validate(raw)
        assert {r.epochs for r in p.prune.rounds.values()} == {p.prune.control.epochs}
        assert p.prune.control.parent == "distill" and "control" in p.quantize.models
    assert p.evaluate.reference == "control" and p.fp32_models.index("control") == 3
    with pytest.raises(ParamsError, match=r"prune\.control\.parent: must be an unpruned model"):
        validate({"prune": {"control": {"parent": "prune_1"}}})
    with pytest.raises(ParamsError, match=r"prune\.rounds\.control: the control's name"):
        validate({"prune": {"rounds": {"control": {"parent": "distill", "width": 0.5}}}})


def test_a_key_left_out_takes_its_sections_default():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["teacher"]["train"]["lr"], raw["prune"]["finetune"]["alpha"], raw["prune"]["finetune"]["train"]["schedule"]
    p, shipped = validate(raw), load_params(ROOT / "params.yaml")
    assert p.teacher.train.lr == shipped.teacher.train.lr != TrainParams().lr
    assert p.prune.finetune == shipped.prune.finetune
    assert validate({"teacher": {"train": {"epochs": 1}}}).teacher.train == dataclasses.replace(
        shipped.teacher.train, epochs=1)


def test_one_round_alone_is_what_a_round_records():
    p = load_params(ROOT / "params.yaml").prune
    one = p.only("prune_2")
    assert list(one.rounds) == ["prune_2"] and one.finetune == p.finetune and one.mode == p.mode


@pytest.mark.parametrize("raw,message", [
    ({"distil": {}}, "params.yaml: distil: unknown section"),
    ({"prune": {"rounds": {"r1": {"parent": "distill", "width": 0}}}}, "params.yaml: prune.rounds.r1.width: must be in (0, 1]"),
    ({"prune": {"blocks": [0, 3]}}, "params.yaml: prune.blocks: must be distinct width indices in 1..6"),
    ({"prune": {"mode": "lyer"}}, "params.yaml: prune.mode: must be one of layer, global"),
    ({"prune": {"criterion": "gamma"}}, "params.yaml: prune.criterion: must be one of bn_scale, l1, "),  # the registry's
    ({"prune": {"bnless_criterion": "bn_scale"}},  # no gamma in a group without a BatchNorm: the weight criteria only
     "params.yaml: prune.bnless_criterion: must be one of l1, l2, "),
    ({"evaluate": {"ship": "fastest"}}, "params.yaml: evaluate.ship: must be one of auto, fp16, uint8, int8, int8w"),
    ({"evaluate": {"batch_sizes": []}}, "params.yaml: evaluate.batch_sizes: must be a non-empty list"),
    ({"quantize": {"models": ["nope"]}}, "params.yaml: quantize.models[0]: no model named 'nope'"),
    ({"prune": {"rounds": {"r1": {"parent": "distill", "width": 0.5}}}, "quantize": {"models": ["distill", "r1"]}},
     "params.yaml: quantize.models[1]: 'r1' is a prune round: every round is quantized by its own quantize-round@r1"),
    ({"prune": {"scratch": ["prune_9"]}}, "params.yaml: prune.scratch[0]: 'prune_9' is not a round of prune.rounds"),
    ({"prune": {"rounds": {"r1": {"parent": "distill", "width": 0.5}}}, "quantize": {"models": ["scratch_r1"]}},
     "params.yaml: quantize.models[0]: no model named 'scratch_r1' (known: control, distill, student, teacher): add "
     "r1 to prune.scratch, which trains it"),
    ({"prune": {"rounds": {"r1": {"parent": "distill", "width": 0.5}}, "scratch": ["r1", "r1"]}},
     "params.yaml: prune.scratch: names a round twice"),
    ({"seed": -1}, "params.yaml: seed: must be a non-negative integer"),
    ({"data": {"image_size": 14}}, "params.yaml: data.image_size: StudentNet halves its input 4 times"),  # not at `student`
])
def test_every_error_names_section_and_key_in_one_style(raw, message):
    with pytest.raises(ParamsError) as e:
        validate(raw)
    assert str(e.value).startswith(message), str(e.value)


def test_nproc_auto_stays_a_value_until_processes_start():
    t = TrainParams(nproc="auto", batch_size=128)
    assert t.nproc == "auto"  # reading params probes no machine
    assert t.processes() == auto_nproc(t.device, t.batch_size)
    assert TrainParams(nproc=2, batch_size=128).processes() == 2
    with pytest.raises(ValueError, match="nproc=3"):
        TrainParams(nproc=3, batch_size=128)


def test_a_stage_cannot_read_an_undeclared_section():
    view = StageParams(Params(), "student", ("seed", "student"))
    assert view.student.train.epochs == Params().student.train.epochs and view.seed == 0
    with pytest.raises(AttributeError, match="student reads params section 'distill' without declaring it"):
        view.distill


def test_stage_help_lists_the_declared_paths_without_loading_params(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "stages/quantize.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert all(flag in proc.stdout for flag in ("--data", "--model", "--out-prefix", "--metrics", "--params"))


def test_a_checkpoint_that_does_not_fit_names_its_file(tmp_path):
    path = tmp_path / "models" / "distill.pt"
    save_checkpoint(path, StudentNet(num_classes=3), name="studentnet", model_kwargs={"base": 16}, num_classes=3,
                    data_meta={"classes": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.5] * 3, "image_size": 16},
                    params={})
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_kwargs"] = {"base": 8}  # the weights no longer fit the model it names
    torch.save(ckpt, path)
    with pytest.raises(ArtifactError, match=rf"^{path}: weights do not fit"):
        model_from_checkpoint(path)


def test_ctrl_c_during_a_save_is_delivered_after_the_file_is_complete(tmp_path, monkeypatch):
    """torch.save interrupted midway raises a RuntimeError from its zip writer (a traceback, not the stage's
    "interrupted" line): the save holds SIGINT and delivers it as KeyboardInterrupt once the file is whole."""
    import os
    import signal

    from shrink.io import save_torch

    real_save = torch.save

    def save_interrupted(obj, f):  # Ctrl-C arrives while torch.save is writing
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_interrupted)
    # Python's own handler, as in a terminal (a background `make test` inherits SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            save_torch({"w": torch.ones(1000)}, tmp_path / "state.pt")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    finally:
        signal.signal(signal.SIGINT, before)
    assert torch.equal(torch.load(tmp_path / "state.pt", weights_only=True)["w"], torch.ones(1000))
