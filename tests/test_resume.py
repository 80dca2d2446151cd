"""A killed or interrupted training stage resumes at its last complete epoch, to the same result (issue 25).

Real processes and real `dvc repro` on a tiny project whose teacher trains 3 epochs: the run is stopped
(kill -9 or Ctrl-C's SIGINT to the whole process group, dvc included) once the first epoch's resume state is
on disk, then `dvc repro` runs again. One uninterrupted run per process count is the reference: the resumed
teacher must end with equal state_dict tensors, equal metrics (wall time aside) and the same dvclive curves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from conftest import copy_project, default_signals, dvc, git, make_project
from shrink.checkpoint import load_checkpoint
from shrink.config import TrainParams
from shrink.data import Split, normalizer
from shrink.distributed import SINGLE
from shrink.models import build_model, output_layer_name, student_widths
from shrink.resume import RESUME_DIR, Resume
from shrink.train import fit, loss_and_accuracy, seed_everything

EPOCHS = 3
STATE = RESUME_DIR / "teacher" / "state.pt"


def edit_params(proj: Path, **train) -> None:
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["teacher"]["train"].update(train)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny project with prepared data committed; each test trains its teacher in a copy."""
    root = tmp_path_factory.mktemp("resume")
    proj = make_project(root / "base", edit=lambda p: p["teacher"]["train"].update(epochs=EPOCHS))
    dvc(proj, "repro", "prepare")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "prepared")
    return proj


def copy(base: Path, name: str, nproc: int = 1) -> Path:
    proj = copy_project(base, base.parent / name)
    if nproc != 1:
        edit_params(proj, nproc=nproc)
    return proj


def repro(proj: Path) -> str:
    """`dvc repro teacher` to the end; its whole output."""
    proc = dvc(proj, "repro", "teacher")
    return proc.stdout + proc.stderr


def result(proj: Path) -> dict:
    metrics = json.loads((proj / "metrics/teacher.json").read_text())
    details = json.loads((proj / "models/teacher.run.json").read_text())
    details.pop("wall_seconds")
    curves = {}
    for tsv in sorted((proj / "dvclive/teacher/plots/metrics").rglob("*.tsv")):
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
        curves[f"{tsv.parent.name}/{tsv.name}"] = [(int(r[0]), r[1]) for r in rows]  # (step, value)
    return {"state": load_checkpoint(proj / "models/teacher.pt")["state_dict"], "metrics": metrics, "details": details,
            "live": json.loads((proj / "dvclive/teacher/metrics.json").read_text()), "curves": curves}


def assert_same(a: dict, b: dict) -> None:
    """Bit for bit: the resumed run and its reference share machine, batches, threads and process count."""
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), f"{k} differs"
    assert a["metrics"] == b["metrics"] and a["details"] == b["details"]
    assert a["live"] == b["live"]
    assert a["curves"] == b["curves"]
    for steps in a["curves"].values():
        assert [s for s, _ in steps] == list(range(EPOCHS))  # no repeated or restarted step


def interrupt(proj: Path, sig: int) -> int:
    """Start `dvc repro teacher`, send ``sig`` to its process group and every process under it (Ctrl-C in a
    terminal, or kill -9 of all of them) once the first epoch's state exists; returns the epoch that state holds."""
    log = open(proj / "interrupted.log", "w")
    # SIGINT back to its default in the child, as in a terminal: a background job of a non-interactive shell
    # (`make test &`, a CI runner's job) inherits SIGINT *ignored*, and the stage would never see the Ctrl-C
    proc = subprocess.Popen(["dvc", "repro", "teacher"], cwd=proj, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 600
        while not (proj / STATE).exists():
            assert proc.poll() is None, f"the teacher ended before its first state:\n{(proj / 'interrupted.log').read_text()}"
            assert time.monotonic() < deadline, "no resume state after 600 s"
            time.sleep(0.02)
        # torchrun starts its workers in sessions of their own: they are signalled one by one
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, sig)
        for w in workers:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(w.pid) != proc.pid:  # the group had it already: one Ctrl-C, not two
                    w.send_signal(sig)
        proc.wait(timeout=120)
        psutil.wait_procs(workers, timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert not (proj / "models/teacher.pt").exists()
    return torch.load(proj / STATE, weights_only=True)["epoch"]


@pytest.fixture(scope="module")
def reference(base) -> dict:
    proj = copy(base, "reference")
    out = repro(proj)
    assert "resuming" not in out
    assert not (proj / STATE.parent).exists(), "a completed stage leaves no resume state"
    return result(proj)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "sigint"])
def test_interrupted_teacher_resumes_to_the_uninterrupted_result(base, reference, sig):
    proj = copy(base, f"stopped-{sig.name}")
    done = interrupt(proj, sig)
    assert done == 1, "the poll saw the first epoch's state: it should stop the run in its second epoch"
    out = repro(proj)
    assert out.count("teacher: resuming at epoch 2 of 3") == 1, out
    assert "teacher epoch 1/3" not in out  # epoch 1 is not trained again
    assert "Traceback" not in out
    assert not (proj / STATE.parent).exists()
    assert_same(result(proj), reference)


def test_changed_param_discards_the_state(base, reference):
    proj = copy(base, "changed")
    interrupt(proj, signal.SIGKILL)
    lr = yaml.safe_load((proj / "params.yaml").read_text())["teacher"]["train"]["lr"]
    edit_params(proj, lr=lr * 2)
    out = repro(proj)
    lines = [line for line in out.splitlines() if "discarded the resume state" in line]
    assert len(lines) == 1, out
    assert "resuming" not in out and "teacher epoch 1/3" in out
    assert not (proj / STATE.parent).exists()


def test_truncated_state_starts_fresh_with_one_warning(base, reference):
    proj = copy(base, "truncated")
    interrupt(proj, signal.SIGKILL)
    path = proj / STATE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = repro(proj)
    warnings = [line for line in out.splitlines() if "unreadable resume state" in line]
    assert len(warnings) == 1 and warnings[0].startswith("teacher: warning: "), out
    assert "Traceback" not in out and "resuming" not in out
    assert_same(result(proj), reference)  # a fresh run is the uninterrupted run


def test_two_processes_killed_resume_to_the_uninterrupted_result(base):
    ref = copy(base, "two-reference", nproc=2)
    out = repro(ref)
    assert json.loads((ref / "models/teacher.run.json").read_text())["processes"] == 2
    proj = copy(base, "two-stopped", nproc=2)
    done = interrupt(proj, signal.SIGKILL)
    out = repro(proj)
    assert out.count(f"teacher: resuming at epoch {done + 1} of 3") == 1, out
    assert "Traceback" not in out
    a, b = result(proj), result(ref)
    assert a["details"]["processes"] == 2
    assert_same(a, b)


STOP_SECONDS = 20  # the stage ends its workers within a few seconds (5 s of grace, then SIGKILL); slack for load
STOPS = {  # who is signalled, and the line the stage ends with
    "kill-stage": ("stage", signal.SIGTERM, "teacher: error: stopped by SIGTERM"),  # kill <pid>, a scheduler
    # dvc and the stage get SIGHUP; dvc dies of it, which sends the stage SIGTERM (PR_SET_PDEATHSIG) at once:
    # the line names whichever of the two the stage handled first
    "terminal-closed": ("group", signal.SIGHUP, "teacher: error: stopped by SIG"),
    "ctrl-c": ("group", signal.SIGINT, "teacher: interrupted"),
    "kill-dvc": ("dvc", signal.SIGTERM, "teacher: error: stopped by SIGTERM"),  # the stage outlives dvc no longer
}


@pytest.mark.parametrize("case", list(STOPS))
def test_a_stopped_two_process_stage_ends_its_workers_and_keeps_its_state(base, case):
    """A 2-process teacher under `dvc repro`, stopped as users stop it once its first epoch's state is saved:
    within seconds no process of the stage is left (the PIDs are collected before the signal), it ends with one
    line and no traceback, the state of its last complete epoch is intact, and (once) the next run resumes."""
    who, sig, line = STOPS[case]
    proj = copy(base, f"stop-{case}", nproc=2)
    log = open(proj / "stopped.log", "w")
    # SHELL=/bin/sh: dvc runs the cmd through it, and dash (unlike bash) stays between dvc and the stage, the
    # harder case for noticing dvc's death (a CI without $SHELL set runs this way)
    proc = subprocess.Popen(["dvc", "repro", "teacher"], cwd=proj, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "SHELL": "/bin/sh"}, start_new_session=True,
                            preexec_fn=default_signals)
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 600
        while not (proj / STATE).exists():
            assert proc.poll() is None, (proj / "stopped.log").read_text()
            assert time.monotonic() < deadline, "no resume state after 600 s"
            time.sleep(0.02)
        # dvc runs the stage's cmd through $SHELL: bash execs it, dash (/bin/sh) stays its parent; so the stage is
        # found as torchrun's parent, whatever shell sits between it and dvc
        tree = psutil.Process(proc.pid).children(recursive=True)
        (torchrun,) = [p for p in tree if "torch.distributed.run" in p.cmdline()]
        stage, workers = torchrun.parent(), torchrun.children()
        assert "stages/teacher.py" in stage.cmdline() and len(workers) == 2, [p.cmdline() for p in tree]
        {"stage": stage.send_signal, "dvc": proc.send_signal, "group": lambda s: os.killpg(proc.pid, s)}[who](sig)
        gone, alive = psutil.wait_procs(tree, timeout=STOP_SECONDS)
        assert not alive, f"still running {STOP_SECONDS} s after {sig.name}: {[p.cmdline() for p in alive]}"
        proc.wait(timeout=60)
    finally:  # whatever failed, nothing of this run outlives the test
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    out = (proj / "stopped.log").read_text()
    assert proc.returncode != 0 and "Traceback" not in out, out
    said = re.findall(r"(?:^|[\r\n])(teacher: [^\r\n]*)", out)  # lines of the stage itself, not its progress bars
    assert len(said) == 1 and said[0].startswith(line), out  # one, the expected one, on a line of its own
    assert not (proj / "models/teacher.pt").exists()
    done = torch.load(proj / STATE, weights_only=True)["epoch"]  # intact: a complete epoch's state
    assert done >= 1
    if case == "kill-stage":
        out = repro(proj)
        assert out.count(f"teacher: resuming at epoch {done + 1} of 3") == 1 and "Traceback" not in out, out


# ------------------------------------------------------------------ in one process (seconds)

META = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
CFG = TrainParams(epochs=3, batch_size=16, crop_padding=2, flip=True, device="cpu")


def learnable(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    noise = torch.randint(-15, 16, (n, 3, 16, 16), generator=g).float()
    return Split(((labels.float() * 50 + 20)[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8), labels)


def train(resume: Resume | None = None, stop_at_step: int | None = None) -> tuple[dict, list, torch.Tensor]:
    """A seeded StudentNet fit; ``stop_at_step`` raises KeyboardInterrupt inside that training step."""
    seed_everything(0)
    model = build_model("studentnet", 4, widths=student_widths(16, 1.0))
    steps = [0]

    def hook(_model):
        steps[0] += 1
        if steps[0] == stop_at_step:
            raise KeyboardInterrupt

    result = fit(model, learnable(64, 0), learnable(32, 1), META, CFG, seed=0, after_backward=hook,
                 ctx=SINGLE, resume=resume)
    return result.model.state_dict(), result.history, torch.get_rng_state()


def test_saving_states_changes_nothing_in_the_run(tmp_path):
    """The default pipeline's CPU results stay bit-identical: saving reads RNG states without drawing."""
    plain = train()
    saved = train(Resume("t", tmp_path / "state.pt", "k"))
    assert all(torch.equal(plain[0][k], saved[0][k]) for k in plain[0])
    assert plain[1] == saved[1] and torch.equal(plain[2], saved[2])
    assert torch.load(tmp_path / "state.pt", weights_only=True)["epoch"] == CFG.epochs


def test_resumed_in_process_equals_uninterrupted(tmp_path, capsys):
    plain = train()
    res = Resume("t", tmp_path / "state.pt", "k")
    with pytest.raises(KeyboardInterrupt):
        train(res, stop_at_step=6)  # 4 steps per epoch: in epoch 2
    resumed = train(res)
    assert "t: resuming at epoch 2 of 3" in capsys.readouterr().out
    assert all(torch.equal(plain[0][k], resumed[0][k]) for k in plain[0])
    assert plain[1] == resumed[1] and torch.equal(plain[2], resumed[2])


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, None], ids=["empty", "garbage", "foreign"])
def test_unreadable_or_foreign_state_is_one_warning_and_removed(tmp_path, capsys, content):
    path = tmp_path / "t" / "state.pt"
    path.parent.mkdir()
    if content is None:
        torch.save({"epoch": 1}, path)  # a readable file that is not a resume state
    else:
        path.write_bytes(content)
    assert Resume("t", path, "k").load(SINGLE) is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"t: warning: {path}: unreadable resume state"), err
    assert not path.exists()


def test_state_of_another_key_is_discarded(tmp_path, capsys):
    train(Resume("t", tmp_path / "t" / "state.pt", "old"))
    assert Resume("t", tmp_path / "t" / "state.pt", "new").load(SINGLE) is None
    assert capsys.readouterr().err.count("t: discarded the resume state of epoch 3") == 1
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_chooses_the_epoch_whose_weights_the_stage_keeps(keep):
    """TrainParams.keep: ``best`` keeps the best epoch on validation; ``last`` the last one, whatever validation
    says (no epoch is selected on it). Epoch 2 is spoiled: its steps push the output bias of class 3, which no
    validation image has, to 1e4, so it scores exactly 0 and is never the best; training is the same either way."""
    seed_everything(0)
    model = build_model("studentnet", 4, widths=student_widths(16, 1.0))
    steps = [0]

    def spoil_epoch_2(m):
        steps[0] += 1
        if steps[0] > 4:  # 4 steps per epoch
            with torch.no_grad():
                dict(m.named_modules())[output_layer_name(m)].bias[3] = 1e4

    val = learnable(32, 1)
    val = Split(val.images, val.labels % 3)  # no class 3
    result = fit(model, learnable(64, 0), val, META, dataclasses.replace(CFG, epochs=2, keep=keep), seed=0,
                 after_backward=spoil_epoch_2, ctx=SINGLE)
    accs = [row["val/acc"] for row in result.history]
    kept = loss_and_accuracy(result.model, val, normalizer(META))[1]
    assert len(accs) == 2 and accs[1] == 0.0, accs
    if keep == "best":
        assert result.best_epoch == 1 and kept == result.best_val_acc == accs[0]
    else:
        assert result.best_epoch == 2 and kept == result.best_val_acc == 0.0
