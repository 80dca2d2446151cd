"""The GPU path, run on a CUDA machine (``pytest tests/test_gpu.py -ra``: one or two GPUs, unattended).

Each test skips with the reason when a piece is missing: a CUDA device (all of them), a second GPU (the
2-process NCCL runs), Debian's Fashion-MNIST (the tests that run the tiny DVC project: ``sudo apt-get install
dataset-fashion-mnist``). Covered: the autocast dtype this GPU gets, the fp16 + GradScaler branch (forced on
any GPU), augmentation and distillation's teacher table on the device, KD with random crops, a training step
with no host-device sync, fp32 accuracies, the splits on the device or left in pinned host memory, too many
processes for the GPUs as a one-line error, and with two GPUs slimming's L1 through DDP + SyncBatchNorm in
distill and a pruning round.
The decisions themselves are tested on the CPU in tests/test_device.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from shrink import device as device_mod
from shrink import train as train_mod
from shrink.batches import augment
from shrink.config import TrainParams
from shrink.data import FASHION_MNIST_FILES, Split, normalizer
from shrink.distill import make_kd_loss
from shrink.models import build_model, student_widths
from shrink.prune import bn_l1_hook
from shrink.device import amp_dtype, select_device
from shrink.train import fit, loss_and_accuracy, seed_everything

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False): the GPU path is checked on a GPU machine only",
)


def fashion_mnist_root() -> Path:
    return Path(yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["root"])


def has_fashion_mnist() -> bool:
    root = fashion_mnist_root()
    return all((root / n).is_file() or (root / f"{n}.gz").is_file() for names in FASHION_MNIST_FILES.values()
               for n in names)


needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2,
                                    reason="fewer than 2 CUDA devices: the 2-process NCCL run needs one GPU per rank")
needs_dataset = pytest.mark.skipif(not has_fashion_mnist(), reason=(
    f"Fashion-MNIST not found in {fashion_mnist_root()} (the tiny DVC project prepares it): "
    f"sudo apt-get install -y dataset-fashion-mnist"))

META = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
CUDA = torch.device("cuda")


def learnable(n: int, classes: int = 4, size: int = 16, seed: int = 0) -> Split:
    """Images whose mean colour is their label: a working training loop learns them in 64 steps (the CPU
    version of the test below: val acc 1.0 at epoch 2 for ce, kd_cached and kd_crop; fewer steps leave
    BatchNorm's running statistics short of the data's, and eval-mode accuracy near chance)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    base = (labels.float() * (200 / classes) + 20)[:, None, None, None]
    noise = torch.randint(-15, 16, (n, 3, size, size), generator=g).float()
    return Split((base + noise).clamp(0, 255).to(torch.uint8), labels)


def student() -> torch.nn.Module:
    return build_model("studentnet", 4, widths=student_widths(16, 1.0))


def test_amp_dtype_is_bf16_only_with_bf16_hardware():
    """PyTorch's own answer without emulation, not the expression the code uses (compute capability)."""
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    print(torch.cuda.get_device_name(), torch.cuda.get_device_capability(), "native bf16:", native)  # -rA
    assert amp_dtype(CUDA) == (torch.bfloat16 if native else torch.float16)
    assert select_device("auto").type == "cuda" or os.environ.get("SHRINK_DEVICE") == "cpu"


def test_augmentation_on_the_device_draws_there_and_cuts_true_windows():
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, device=CUDA)
    gen, mask = torch.Generator(CUDA).manual_seed(1), []
    out = augment(x, 2, True, gen, flipped=mask)
    assert out.device.type == "cuda" and mask[0].device.type == "cuda"
    x, out, fl = x.cpu(), out.cpu(), mask[0].cpu()
    padded = F.pad(x, (2,) * 4)
    windows = {(dy, dx) for dy in range(5) for dx in range(5)}
    for i in range(32):  # each sample is one window of its padded image, mirrored where the mask says
        want = out[i].flip(2) if fl[i] else out[i]
        assert any(torch.equal(padded[i, :, dy : dy + 16, dx : dx + 16], want) for dy, dx in windows), i
    assert 0 < int(fl.sum()) < 32


def sync_count(train: Split, val: Split, loss_fn, after_backward, cfg: TrainParams) -> int:
    """CUDA operations that synchronised with the host during ``fit`` (torch's sync debug mode)."""
    seed_everything(0)
    model = student()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(model, train, val, META, cfg, seed=0, loss_fn=loss_fn, after_backward=after_backward, desc="sync")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("kd", [False, True])
def test_a_training_step_makes_no_host_device_sync(kd, monkeypatch):
    """One epoch over 8 batches syncs fewer than 4 times more than one over 4 batches: the step itself
    (gather, crop and flip draws, KD table lookup, L1 hook, optimiser, schedule) never waits for the host.
    fp16's GradScaler does sync once per step (PyTorch's inf check), so this runs in bf16 or fp32."""
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    monkeypatch.setattr(train_mod, "amp_dtype", lambda d: (torch.bfloat16 if native else None) if d.type == "cuda" else None)
    cfg = TrainParams(epochs=1, batch_size=64, crop_padding=0 if kd else 2, flip=True, channels_last=True,
                      device="cuda")
    loss = (lambda: make_kd_loss(student().eval(), 2.0, 0.5)) if kd else (lambda: None)
    val = learnable(128, seed=1)
    sync_count(learnable(256), val, loss(), bn_l1_hook(1e-4), cfg)  # warm-up: cuDNN's search, the allocator
    small = sync_count(learnable(256), val, loss(), bn_l1_hook(1e-4), cfg)  # 4 steps
    big = sync_count(learnable(512), val, loss(), bn_l1_hook(1e-4), cfg)  # 8 steps
    print("syncs per fit:", small, big)  # shown by -rA
    assert small > 0  # the counter works: fit syncs at least at the epoch's end (the loss and accuracy sums)
    assert big - small < 4, (small, big)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    """A teacher that knows the task (a random one would teach the student noise)."""
    seed_everything(0)
    cfg = TrainParams(epochs=2, batch_size=32, lr=5e-3, crop_padding=0, flip=True, device="cuda")
    result = fit(student(), learnable(1024), learnable(256, seed=1), META, cfg, seed=1, desc="teacher")
    assert result.best_val_acc > 0.8, result.history
    return result.model


@pytest.mark.parametrize("amp", ["auto", "fp16"])
@pytest.mark.parametrize("loss", ["ce", "kd_cached", "kd_crop"])
def test_fit_on_cuda_learns_and_reports_fp32_accuracy(loss, amp, teacher, monkeypatch):
    """Every branch a GPU run can take: this GPU's autocast dtype and fp16 + GradScaler (forced, as on a T4);
    cross-entropy, KD from the teacher table on the device (no random crop), KD with random crops (the
    teacher runs on each augmented batch)."""
    if amp == "fp16":
        monkeypatch.setattr(train_mod, "amp_dtype", lambda d: torch.float16 if d.type == "cuda" else None)
    steps = []
    real_step = torch.amp.GradScaler.step
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k))
    train, val = learnable(1024), learnable(256, seed=1)
    seed_everything(0)
    model = student()
    loss_fn = make_kd_loss(teacher, 2.0, 0.5) if loss != "ce" else None
    cfg = TrainParams(epochs=2, batch_size=32, lr=5e-3, crop_padding=2 if loss == "kd_crop" else 0, flip=True,
                      channels_last=True, device="cuda")
    result = fit(model, train, val, META, cfg, seed=0, loss_fn=loss_fn, desc="gpu")
    assert result.best_val_acc > 0.8, result.history
    assert (len(steps) > 0) == (amp == "fp16" or amp_dtype(CUDA) == torch.float16)  # the GradScaler ran iff fp16
    if loss_fn is not None:
        assert next(loss_fn.teacher.parameters()).device.type == "cuda"
        if loss == "kd_cached":
            assert loss_fn.table is not None and loss_fn.table.device.type == "cuda"
        else:
            assert loss_fn.table is None  # random crops: no cache, the teacher runs every step
    # the returned model is a plain contiguous CPU model; the accuracy fit reported was computed in fp32, so
    # the CPU's equals it up to kernel rounding (at most a couple of the 256 images on a decision boundary)
    p = next(result.model.parameters())
    assert p.device.type == "cpu" and p.is_contiguous() and p.dtype == torch.float32
    cpu_acc = loss_and_accuracy(result.model, val, normalizer(META))[1]
    assert abs(cpu_acc - result.best_val_acc) <= 2 / 256, (cpu_acc, result.best_val_acc)


@pytest.mark.parametrize("where", ["device", "batches"])
def test_fit_places_the_splits_as_decided_and_says_so(where, monkeypatch, capsys):
    """Both placements (``device.placement``, decided on the CPU in tests/test_device.py), forced: the splits on
    the device, or in pinned host memory with each batch copied (a GPU too small for them); both learn."""
    monkeypatch.setattr(device_mod, "placement", lambda size, free: where)
    seen = []
    real_epoch = train_mod.train_one_epoch
    monkeypatch.setattr(train_mod, "train_one_epoch", lambda model, data, *a, **k: seen.append(
        (data.images.device.type, data.images.is_pinned())) or real_epoch(model, data, *a, **k))
    seed_everything(0)
    cfg = TrainParams(epochs=2, batch_size=32, lr=5e-3, crop_padding=2, flip=True, device="cuda")
    result = fit(student(), learnable(1024), learnable(256, seed=1), META, cfg, seed=0, desc="gpu")
    assert result.best_val_acc > 0.8, result.history
    assert seen == ([("cuda", False)] * 2 if where == "device" else [("cpu", True)] * 2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gpu: data: ")]
    assert len(lines) == 1 and ("copied to cuda:0 once" if where == "device" else "pinned host memory") in lines[0]


def tiny_project(tmp_path: Path, edit) -> Path:
    from conftest import make_project

    return make_project(tmp_path / "proj", edit)


def repro(proj: Path, *targets: str, hash_dir: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SHRINK_DEVICE", None)
    if hash_dir is not None:
        env["SHRINK_RANK_HASH_DIR"] = str(hash_dir)
    proc = subprocess.run(["dvc", "repro", *targets], cwd=proj, capture_output=True, text=True, env=env, timeout=1800)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@needs_dataset
def test_more_processes_than_gpus_is_a_one_line_params_error(tmp_path):
    n = torch.cuda.device_count() + 1
    proj = tiny_project(tmp_path, lambda p: p["student"]["train"].update(nproc=n, batch_size=64 * n))
    proc = repro(proj, "student", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"train.nproc: {n} processes on CUDA need one GPU each" in out, out
    assert "invalid device ordinal" not in out and "Traceback" not in out, out


@needs_two_gpus
@needs_dataset
def test_two_gpus_nccl_student_stage(tmp_path):
    proj = tiny_project(tmp_path, lambda p: p["student"]["train"].update(nproc=2))
    repro(proj, "student", hash_dir=tmp_path / "hash")
    hashes = {p.read_text() for p in (tmp_path / "hash").iterdir()}
    assert len(list((tmp_path / "hash").iterdir())) == 2 and len(hashes) == 1
    assert json.loads((proj / "models/student.run.json").read_text())["processes"] == 2


@needs_two_gpus
@needs_dataset
def test_two_gpus_slimming_l1_through_ddp_and_syncbatchnorm(tmp_path):
    """slim.l1 > 0 with 2 NCCL ranks: SyncBatchNorm layers must be found as the prunable BatchNorms (distill,
    then the first pruning round's fine-tuning), and the ranks must end with the same weights."""
    def edit(p):
        p["slim"]["l1"] = 1e-3
        p["distill"]["train"].update(nproc=2)
        p["prune"]["finetune"]["train"].update(nproc=2)

    proj = tiny_project(tmp_path, edit)
    first = next(iter(yaml.safe_load((proj / "params.yaml").read_text())["prune"]["rounds"]))
    for target, metrics in (("distill", "models/distill.run.json"), (f"prune@{first}", f"models/{first}.run.json")):
        hash_dir = tmp_path / f"hash-{target}"
        repro(proj, target, hash_dir=hash_dir)
        hashes = {p.name: p.read_text() for p in hash_dir.iterdir()}
        assert sorted(hashes) == ["rank0.sha256", "rank1.sha256"] and len(set(hashes.values())) == 1, hashes
        assert json.loads((proj / metrics).read_text())["processes"] == 2
