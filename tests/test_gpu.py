"""The GPU path: runs whenever torch sees a CUDA device, else every test is skipped with the reason
(shown by ``pytest -ra``). Checks AMP (bf16 where supported, fp16 with a GradScaler otherwise),
channels_last, pinned non-blocking copies, augmentation on the device, distillation's teacher cache on
the device, and with two or more GPUs a 2-process NCCL run of the student stage through `dvc repro`.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from shrink.config import TrainParams
from shrink.data import Split
from shrink.distill import make_kd_loss
from shrink.models import build_model, student_widths
from shrink.train import amp_dtype, augment, evaluate, fit, select_device, to_device

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False): the GPU path is checked on a GPU machine only",
)

META = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def learnable(n: int, classes: int = 4, size: int = 16, seed: int = 0) -> Split:
    """Images whose mean colour is their label: any working training loop learns them in one epoch."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    base = (labels.float() * (200 / classes) + 20)[:, None, None, None]
    noise = torch.randint(-15, 16, (n, 3, size, size), generator=g).float()
    return Split((base + noise).clamp(0, 255).to(torch.uint8), labels)


def test_device_and_amp_dtype():
    dev = select_device("auto")
    assert dev.type == "cuda" or os.environ.get("SHRINK_DEVICE") == "cpu"
    dtype = amp_dtype(torch.device("cuda"))
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert amp_dtype(torch.device("cpu")) is None


def test_augmentation_on_the_device_matches_the_cpu():
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    cpu = augment(x, 2, True, torch.Generator().manual_seed(1))
    gpu = augment(to_device(x, torch.device("cuda")), 2, True, torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("distill", [False, True])
def test_fit_on_cuda_with_amp_and_channels_last_learns(distill):
    train, val = learnable(512), learnable(256, seed=1)
    torch.manual_seed(0)
    model = build_model("student", 4, widths=student_widths(16, 1.0))
    loss_fn = None
    if distill:
        teacher = build_model("student", 4, widths=student_widths(16, 1.0))
        loss_fn = make_kd_loss(teacher, 2.0, 0.5)
    cfg = TrainParams(epochs=2, batch_size=64, lr=5e-3, crop_padding=0, flip=True, channels_last=True, device="cuda")
    result = fit(model, train, val, META, cfg, seed=0, loss_fn=loss_fn, desc="gpu")
    assert result.best_val_acc > 0.8, result.history
    if distill:
        assert loss_fn.table is not None and loss_fn.table.device.type == "cuda"  # cached teacher logits
    # the returned model is a plain contiguous CPU model; its CPU accuracy is the GPU's (AMP rounding aside)
    p = next(result.model.parameters())
    assert p.device.type == "cpu" and p.is_contiguous()
    from shrink.data import normalizer

    cpu_acc = evaluate(result.model, val, normalizer(META))[1]
    assert abs(cpu_acc - result.best_val_acc) <= 0.02


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than 2 CUDA devices: the NCCL run needs two")
def test_two_gpus_nccl_student_stage(tmp_path):
    from conftest import make_project

    proj = make_project(tmp_path / "proj", lambda p: p["student"]["train"].update(nproc=2))
    env = dict(os.environ, SHRINK_RANK_HASH_DIR=str(tmp_path / "hash"))
    proc = subprocess.run(["dvc", "repro", "student"], cwd=proj, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hashes = {p.read_text() for p in (tmp_path / "hash").iterdir()}
    assert len(list((tmp_path / "hash").iterdir())) == 2 and len(hashes) == 1
    assert json.loads((proj / "metrics/student.json").read_text())["processes"] == 2
