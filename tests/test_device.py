"""The GPU path's decisions, checked on the CPU: which autocast dtype a GPU gets, whether the splits fit on it,
how many processes and what global batch a launch may have, that evaluation ignores autocast, and that the CPU draws exactly the random
numbers it always drew (so moving the draws to the device on CUDA cannot change a CPU result)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import KERNEL_TOL, assert_same_logits
from shrink import train as train_mod
from shrink.batches import augment
from shrink.config import ParamsError, TrainParams, UserError
from shrink.data import Split, normalizer
from shrink.device import amp_dtype, autocast_dtype, place_splits, placement
from shrink.distributed import check_batch, check_nproc, context, relaunch
from shrink.models import build_model, student_widths
from shrink.train import predict_logits, seed_everything, seed_rank, train_one_epoch

META = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


@pytest.mark.parametrize("capability, dtype", [
    ((6, 1), torch.float16),   # Pascal (GTX 10xx, P40)
    ((7, 0), torch.float16),   # V100
    ((7, 5), torch.float16),   # T4, RTX 20xx: PyTorch emulates bf16 there, so is_bf16_supported() says yes
    ((8, 0), torch.bfloat16),  # A100
    ((8, 6), torch.bfloat16),  # RTX 30xx, A10
    ((8, 9), torch.bfloat16),  # L4, RTX 40xx
    ((9, 0), torch.bfloat16),  # H100
    ((12, 0), torch.bfloat16),
    (None, None),              # the CPU: no autocast
])
def test_bf16_only_with_bf16_hardware_else_fp16(capability, dtype):
    assert autocast_dtype(capability) == dtype


def test_no_autocast_on_the_cpu():
    assert amp_dtype(torch.device("cpu")) is None


def test_nproc_is_checked_against_the_visible_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ParamsError, match=r"^params\.yaml: distill\.train\.nproc: 2 processes on CUDA need one GPU "
                                          r"each, but torch sees 1 GPU; set nproc to at most 1, or device: cpu$"):
        check_nproc(2, "cuda", 1, "distill.train")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ParamsError, match=r"torch sees 2 GPUs \(CUDA_VISIBLE_DEVICES=0,1\)"):
        check_nproc(4, "cuda", 2)
    check_nproc(2, "cuda", 2)
    check_nproc(1, "cuda", 1)
    check_nproc(2, "cuda", 8)  # fewer processes than GPUs: the first ones are used
    check_nproc(4, "cpu", 0)  # the CPU has no such limit


def test_relaunch_refuses_more_processes_than_gpus_before_starting_torchrun(monkeypatch):
    """The wiring, with a fake one-GPU machine: relaunch fails before it would start torchrun."""
    for var in ("WORLD_SIZE", "SHRINK_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def no_exec(*args):
        raise AssertionError("relaunch started torchrun")

    monkeypatch.setattr("shrink.distributed.supervise", no_exec)
    with pytest.raises(ParamsError, match=r"^params\.yaml: prune\.finetune\.train\.nproc: 2 processes on CUDA"):
        relaunch(2, device="auto", key="prune.finetune.train")
    relaunch(1, device="auto")  # one process: nothing to start, nothing to check
    with pytest.raises(AssertionError, match="started torchrun"):  # device: cpu is not limited by the GPUs
        relaunch(2, device="cpu")


def test_batch_is_checked_against_the_world_torchrun_started(monkeypatch):
    with pytest.raises(ParamsError, match=r"^params\.yaml: teacher\.train\.batch_size: 128 does not split evenly "
                                          r"over the 3 processes torchrun started \(WORLD_SIZE=3\); use a multiple of 3$"):
        check_batch(128, 3, "teacher.train")
    check_batch(128, 4)
    # a torchrun started by hand (2 machines x 3 processes) while params.yaml says nproc: 2
    monkeypatch.setenv("WORLD_SIZE", "6")
    with pytest.raises(ParamsError, match=r"student\.train\.batch_size: 64 .* \(WORLD_SIZE=6\)"):
        relaunch(2, key="student.train", batch_size=64)
    relaunch(2, key="student.train", batch_size=96)  # splits: returns, this rank goes on


def test_a_rank_without_a_gpu_of_its_own_is_a_one_line_error(monkeypatch):
    """torchrun started by hand with --nproc-per-node above the GPU count: rank 1 of a one-GPU machine."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"^torchrun: local rank 1 has no GPU of its own: torch sees 1 on this "
                                        r"machine; start at most 1 per machine \(--nproc-per-node=1\)$"):
        context(torch.device("cuda"))


def test_evaluation_ignores_autocast(monkeypatch):
    """Reported accuracies come from fp32 logits, even where training autocasts: with bf16 forced for the CPU
    (it is off there), predict_logits still computes the fp32 logits.

    Within kernel noise (conftest.KERNEL_TOL), not bit for bit: predict_logits runs batches of 8 and 4, the
    reference one batch of 20, and oneDNN may pick other fp32 kernels for other batch shapes (it does on a
    Sapphire Rapids Xeon: issue 32). Measured on this model: batch-shape noise up to 4e-7 of the largest
    |logit| (Zen 4, AVX-512 and AVX2 paths); bf16 moves the logits by 1.6e-3 of it (1.2e-2 relative on the
    element it moves most), as much when predict_logits itself was made to autocast: 80x the tolerance."""
    torch.manual_seed(0)
    model = build_model("studentnet", 4, widths=student_widths(8, 1.0)).eval()
    images = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8)
    norm = normalizer(META)
    with torch.no_grad():
        fp32 = model(norm(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(norm(images)).float()
    with pytest.raises(AssertionError, match="differ by"):  # the check tells bf16 from fp32, ten times over
        assert_same_logits(bf16, fp32, tol=10 * KERNEL_TOL)
    monkeypatch.setattr(train_mod, "amp_dtype", lambda device: torch.bfloat16)
    assert_same_logits(predict_logits(model, images, norm, batch_size=8), fp32, what="predict_logits, in batches of 8")


def test_predict_logits_takes_any_callable():
    """A plain callable (e.g. an ONNX Runtime session's wrapper, returning NumPy) predicts like the module."""
    torch.manual_seed(0)
    model = build_model("studentnet", 4, widths=student_widths(8, 1.0)).eval()
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    norm = normalizer(META)
    got = predict_logits(lambda x: model(x).numpy(), images, norm, batch_size=4)  # no_grad: predict_logits's
    assert torch.equal(got, predict_logits(model, images, norm, batch_size=4))


def draws(seed: int, total: int, padding: int, flip: bool) -> torch.Generator:
    """A generator after the draws augment has always made for one batch of ``total`` samples."""
    g = torch.Generator().manual_seed(seed)
    if padding:
        torch.randint(0, 2 * padding + 1, (total, 1), generator=g)
        torch.randint(0, 2 * padding + 1, (total, 1), generator=g)
    if flip:
        torch.rand(total, generator=g)
    return g


@pytest.mark.parametrize("padding, flip", [(2, True), (3, False), (0, True)])
def test_augment_on_the_cpu_draws_what_it_always_drew(padding, flip):
    """Same random calls in the same order on the CPU generator, and each sample is its own window of the
    padded image, mirrored where the mask says (a per-sample loop as the reference); ``part`` takes the rank's
    share of the global batch's draws."""
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    gen, mask = torch.Generator().manual_seed(5), []
    out = augment(x[4:7], padding, flip, gen, total=10, part=slice(4, 7), flipped=mask)
    assert torch.equal(gen.get_state(), draws(5, 10, padding, flip).get_state())
    ref = torch.Generator().manual_seed(5)
    oy = torch.randint(0, 2 * padding + 1, (10,), generator=ref) if padding else torch.zeros(10, dtype=torch.long)
    ox = torch.randint(0, 2 * padding + 1, (10,), generator=ref) if padding else torch.zeros(10, dtype=torch.long)
    fl = torch.rand(10, generator=ref) < 0.5 if flip else torch.zeros(10, dtype=torch.bool)
    padded = F.pad(x, (padding,) * 4)
    for j, i in enumerate(range(4, 7)):
        window = padded[i, :, oy[i] : oy[i] + 8, ox[i] : ox[i] + 8]
        assert torch.equal(out[j], window.flip(2) if fl[i] else window), i
    assert torch.equal(mask[0], fl[4:7])


def test_an_epoch_on_the_cpu_draws_what_it_always_drew():
    """The CPU epoch's random calls are the batch order, then each batch's augmentation, on the one generator
    (the device's own generator is only made on a GPU)."""
    g = torch.Generator().manual_seed(0)
    n, batch = 49, 16
    data = Split(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8), torch.randint(0, 3, (n,), generator=g))
    torch.manual_seed(0)
    model = build_model("studentnet", 3, widths=student_widths(4, 1.0))
    cfg = TrainParams(batch_size=batch, crop_padding=2, flip=True, device="cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(7)
    train_one_epoch(model, data, normalizer(META), opt, cfg, gen, loss_fn=lambda lo, y, _x: F.cross_entropy(lo, y))
    want = torch.Generator().manual_seed(7)
    torch.randperm(n, generator=want)
    for size in (16, 16, 17):  # a last batch of 1 joins the previous one (batches.batch_starts)
        for _ in range(2):
            torch.randint(0, 5, (size, 1), generator=want)
        torch.rand(size, generator=want)
    assert torch.equal(gen.get_state(), want.get_state())


def test_seeds_per_rank_differ_and_rank0_keeps_the_single_process_stream():
    seed_everything(3)
    single = torch.get_rng_state()
    seed_rank(3, 0)
    assert torch.equal(torch.get_rng_state(), single)  # rank 0 draws what one process draws
    states = []
    for rank in (1, 2):
        seed_rank(3, rank)
        states.append(torch.rand(4))
    seed_everything(3)
    assert not torch.equal(states[0], states[1]) and not torch.equal(states[0], torch.rand(4))


def test_cudnn_benchmark_on_unless_deterministic():
    before = torch.backends.cudnn.benchmark
    try:
        seed_everything(0)
        assert torch.backends.cudnn.benchmark
        seed_everything(0, deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = before


GB = 10**9


@pytest.mark.parametrize("split_bytes, free_bytes, where", [
    (0.13 * GB, 15 * GB, "device"),   # Fashion-MNIST at 28 px on any GPU
    (1.74 * GB, 14.5 * GB, "device"),  # Food-11 at 224 px (train + val) on a 16 GB GPU
    (1.74 * GB, 3.5 * GB, "batches"),  # ... on a 4 GB one: the whole splits would leave no room to train
    (2.0 * GB, 1.0 * GB, "batches"),  # more than is free at all
    (1.74 * GB, 7.5 * GB, "device"),  # ... on an 8 GB one
    (1.0 * GB, 3.0 * GB, "device"),   # at the margin: the splits take at most a third of what is free
    (1.0 * GB + 1, 3.0 * GB, "batches"),
])
def test_splits_go_to_the_gpu_only_with_room_to_train(split_bytes, free_bytes, where):
    assert placement(int(split_bytes), int(free_bytes)) == where


def test_on_the_cpu_the_splits_stay_as_they_are(capsys):
    """No device query, no copy, no line: the CPU path is what it always was."""
    a = Split(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    b = Split(torch.ones(2, 3, 8, 8, dtype=torch.uint8), torch.ones(2, dtype=torch.long))
    assert place_splits((a, b), torch.device("cpu"), "teacher") == (a, b)
    assert capsys.readouterr() == ("", "")
