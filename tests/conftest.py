"""Shared fixtures: small generated image folders (Food-11 and ImageFolder layouts)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]


def write_image(path: Path, label: int, size: int = 20, seed: int = 0) -> None:
    """A small RGB image whose colour depends on the label (so a model can learn it)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([(label * 70) % 256, (label * 130 + 40) % 256, (255 - label * 50) % 256], dtype=torch.float)
    noise = torch.randint(-30, 30, (size, size + 4, 3), generator=g).float()
    arr = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_food11(root: Path, classes: int = 3, per_class: int = 4, evaluation: int = 3) -> Path:
    for split, n in (("training", per_class), ("validation", max(2, per_class // 2))):
        for c in range(classes):
            for i in range(n):
                write_image(root / split / f"{c}_{i}.jpg", c, seed=c * 100 + i)
    for i in range(evaluation):
        write_image(root / "evaluation" / f"{i:04d}.jpg", i % classes, seed=999 + i)
    return root


def make_imagefolder(root: Path, classes=("cat", "dog"), per_class: int = 3) -> Path:
    for split in ("train", "val", "test"):
        for c, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / split / name / f"{name}{i}.png", c, seed=c * 10 + i)
    return root


@pytest.fixture
def food11(tmp_path: Path) -> Path:
    return make_food11(tmp_path / "food-11")


# ------------------------------------------------------------------ one function, other kernels

# Kernel noise (issue 32): one fp32 function computed along other paths -- other conv shapes (a pruned net
# against its masked original), other batch shapes, another runtime, another CPU or ISA -- differs in the
# last bits, as oneDNN, MLAS and ATen pick other kernels. Measured for PyTorch against PyTorch: at most 5e-7
# of the largest |logit| on a Zen 4 EPYC (AVX-512 and AVX2 paths), ~1e-6 on a Sapphire Rapids Xeon; ONNX
# Runtime folds BatchNorm into the weights and differs more (3e-6: test_evaluate allows it 1e-4). Exact
# comparisons are kept for the same computation on the same path (same shapes, batches, threads and process
# count: a reloaded checkpoint, a resumed or repeated run); across paths, logits may differ by KERNEL_TOL of
# the largest |logit|, 20x the noise. What those tests exist to catch is larger: bf16 moves the logits by
# 1.6e-3 of it, a wrong channel kept in a pruned StudentNet by 1e-5 to 1e-4, a channel cut out of step more.
KERNEL_TOL = 2e-5


def assert_same_logits(actual: torch.Tensor, expected: torch.Tensor, tol: float = KERNEL_TOL, what: str = "") -> None:
    """``actual`` computes ``expected``'s function: equal within ``tol`` of the largest |expected|."""
    scale = expected.abs().max().item()
    gap = (actual - expected).abs().max().item() / scale
    assert actual.shape == expected.shape and gap <= tol, \
        f"{what or 'logits'}: differ by {gap:.2g} of the largest |logit| ({scale:.3g}), more than {tol:g}"


def clear_top1(logits: torch.Tensor, tol: float = KERNEL_TOL) -> torch.Tensor:
    """Which rows' top class leads the runner-up by more than ``tol`` of the largest |logit|: the ones whose
    argmax no kernel noise can move (a near tie may go either way on another path)."""
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1] > tol * logits.abs().max()


# ------------------------------------------------------------------ tiny DVC projects

import shutil
import subprocess
import sys

# one "tiny project": `shrink bench --quick`'s, over the images below (shrink.bench.project's docstring)
from shrink.bench.project import copy_pipeline, init_repo, tiny_overrides
from shrink.config import scratch_model

# python and dvc of this environment must be what `dvc repro` runs
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session", autouse=True)
def _subprocess_tmpdir(tmp_path_factory):
    """The commands the tests start (dvc, torchrun) keep their temporary files in this session's pytest folder,
    which pytest's retention removes: whatever a failing or killed one leaves stays out of /tmp."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp_path_factory.mktemp("subprocess-tmp")))
        yield


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a real command; on failure the assertion shows its output."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def git(cwd: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd).stdout


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["dvc", *args], cwd, check=check, timeout=900)


# The tiny projects' data: a Food-11-layout folder of 16 px images, each a square of its class's colour at a
# random place on grey noise, so every model learns it in a few dozen steps and a model at chance (0.25)
# fails every accuracy check. Committed inside the project: copies and clones carry it, and every path
# in the metrics stays the same from one project to the next.
TINY_CLASSES = ("red", "green", "blue", "yellow")
TINY_COLOURS = ((230, 40, 40), (40, 200, 60), (50, 80, 240), (240, 220, 40))
TINY_DATA = "images"
TINY_TRAIN, TINY_VAL, TINY_EVAL = 48, 24, 16  # per class, per class (half of it becomes test), in all
TINY_LEARN = {"teacher": (16, 2), "student": (16, 4), "distill": (16, 4)}  # batch, epochs: StudentNet's
# BatchNorm running statistics need ~40 steps to come near the batch statistics (fewer: constant predictions)


def write_tiny_image(path: Path, label: int, seed: int, size: int = 16) -> None:
    """One tiny-project image: grey noise with a ``TINY_COLOURS[label]`` square of 8..11 px somewhere on it."""
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(60, 196, (size, size, 3), generator=g)
    s = int(torch.randint(8, 12, (1,), generator=g))
    r, c = (int(v) for v in torch.randint(0, size - s + 1, (2,), generator=g))
    arr[r:r + s, c:c + s] = torch.tensor(TINY_COLOURS[label]) + torch.randint(-25, 26, (s, s, 3), generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.clamp(0, 255).to(torch.uint8).numpy()).save(path)


def tiny_eval_label(i: int) -> int:
    """The hidden label of evaluation/<i>.png (the course's unlabeled split: the tests know its answers)."""
    return (i * 3 + 1) % len(TINY_CLASSES)


def make_tiny_images(root: Path) -> Path:
    """Write the tiny projects' Food-11 folder: training/, validation/, evaluation/ and classes.txt."""
    for s, (split, n) in enumerate((("training", TINY_TRAIN), ("validation", TINY_VAL))):
        for c in range(len(TINY_CLASSES)):
            for i in range(n):
                write_tiny_image(root / split / f"{c}_{i:03d}.png", c, seed=s * 10_000 + c * 1000 + i)
    for i in range(TINY_EVAL):
        write_tiny_image(root / "evaluation" / f"{i:04d}.png", tiny_eval_label(i), seed=50_000 + i)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in TINY_CLASSES))
    return root


def make_project(dest: Path, edit=None) -> Path:
    """A new git + DVC repo holding this project's pipeline with tiny params over the tiny images, committed."""
    def tiny(params: dict) -> None:
        tiny_overrides(params)
        params["data"].update(source="folder", root=TINY_DATA, limit=None)
        for stage, (batch, epochs) in TINY_LEARN.items():
            params[stage]["train"].update(batch_size=batch, epochs=epochs)
        if edit:
            edit(params)

    copy_pipeline(ROOT, dest, tiny)
    make_tiny_images(dest / TINY_DATA)
    return init_repo(dest, "tiny project")


TINY_SCRATCH = ["prune_1"]  # the tiny run's rounds trained from scratch too (prune.scratch: the optional stage)
# and quantized (quantize.models lists their twins): candidates to ship, after the rounds
TINY_QUANTIZE = ["distill", "control", *(scratch_model(r) for r in TINY_SCRATCH)]


def _tiny_run_params(params: dict) -> None:
    params["prune"].update(scratch=list(TINY_SCRATCH))
    params["quantize"].update(models=list(TINY_QUANTIZE))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One full tiny `dvc repro` (with scratch@prune_1, quantized and a candidate to ship), committed; tests that
    change it work on a copy (see copy_project)."""
    proj = make_project(tmp_path_factory.mktemp("tiny") / "proj", edit=_tiny_run_params)
    dvc(proj, "repro")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "tiny run")
    return proj


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a project with its git history and DVC cache (cheap: a few MB)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


# ------------------------------------------------------------------ a local S3 server (moto)

import socket
import time


def default_signals() -> None:
    """preexec_fn for a process a user starts from a terminal: SIGINT and SIGHUP at their defaults, whatever this
    test run inherited (a background or `nohup` launch ignores them, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """One moto S3 server on 127.0.0.1 for the whole session (started and stopped here); each test makes
    buckets of its own names."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"moto server exited ({proc.returncode}), see {log.name}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not open its port in 60 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def isolate_aws(monkeypatch, tmp_path: Path) -> None:
    """Only the dummy keys of the moto server may be used: no profile, env key or metadata service."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
