"""The bad-input matrix (issue 12): every fault a user can hit ends in one line naming the file or key,
a non-zero status, no traceback, and nothing changed on disk (no output, no temp, no dvc.lock change).

Most cases run a stage script in-process (``runpy``, as ``python stages/<x>.py`` would, in a small project
folder): a stage exits through ``SystemExit("<stage>: error: ...")``, and any other exception would
escape as a traceback and fail the test. The signal cases run real processes (``kill -9``, SIGINT, two
``dvc repro`` at once) in one shared tiny DVC project.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT, default_signals, dvc, git, make_food11, make_imagefolder, make_project, write_image
from shrink import predict
from shrink.bench.project import tiny_overrides
from shrink.checkpoint import save_checkpoint
from shrink.data import PrepareError, decode_image, load_meta, load_split, prepare, to_rgb
from shrink.config import DataParams
from shrink.models import build_model


# ------------------------------------------------------------------ a small project to break


def tiny_params(root: Path) -> dict:
    params = tiny_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params["data"].update(source="folder", root=str(root), limit=None)
    return params


@pytest.fixture(scope="session")
def base_project(tmp_path_factory) -> Path:
    """params.yaml over a generated Food-11 folder, prepared data, and a (untrained) teacher checkpoint."""
    base = tmp_path_factory.mktemp("bad")
    root = make_food11(base / "food", classes=3, per_class=6)
    proj = base / "proj"
    proj.mkdir()
    (proj / "params.yaml").write_text(yaml.safe_dump(tiny_params(root), sort_keys=False))
    prepare(DataParams(source="folder", root=str(root), image_size=16), proj / "data/prepared", seed=0)
    meta = load_meta(proj / "data/prepared")
    teacher = build_model("resnet18", 3)
    save_checkpoint(proj / "models/teacher.pt", teacher, name="resnet18", model_kwargs={},
                    num_classes=3, data_meta={k: meta[k] for k in ("classes", "mean", "std", "image_size")}, params={})
    return proj


@pytest.fixture
def proj(base_project, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the project (and of its image folder), as the current folder."""
    food = tmp_path / "food"
    shutil.copytree(base_project.parent / "food", food)
    p = tmp_path / "proj"
    shutil.copytree(base_project, p)
    params = yaml.safe_load((p / "params.yaml").read_text())
    params["data"]["root"] = str(food)
    (p / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(p)
    return p


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (but the temp folder, which sweeps itself) -> content hash."""
    return {str(f.relative_to(folder)): hashlib.md5(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file() and ".shrink-tmp" not in f.parts}


STAGE_ARGS = {
    "prepare": ["--out", "data/prepared", "--metrics", "metrics/prepare.json"],
    "teacher": ["--data", "data/prepared", "--weights-dir", "weights", "--out", "models/teacher.pt",
                "--metrics", "metrics/teacher.json", "--live", "dvclive/teacher"],
    "student": ["--data", "data/prepared", "--out", "models/student.pt", "--metrics", "metrics/student.json",
                "--live", "dvclive/student"],
    "distill": ["--data", "data/prepared", "--teacher", "models/teacher.pt", "--out", "models/distill.pt",
                "--metrics", "metrics/distill.json", "--live", "dvclive/distill"],
    "control": ["--parent", "models/distill.pt", "--teacher", "models/teacher.pt", "--data", "data/prepared",
                "--out", "models/control.pt", "--metrics", "metrics/control.json", "--live", "dvclive/control"],
}


def run_stage(stage: str, *extra: str, monkeypatch) -> int | str | None:
    """Run stages/<stage>.py in-process as its command line would; returns the exit code or message."""
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py", *STAGE_ARGS[stage], *extra])
    try:
        runpy.run_path(str(ROOT / "stages" / f"{stage}.py"), run_name="__main__")
    except SystemExit as e:
        return e.code
    return 0


def assert_refused(proj: Path, stage: str, monkeypatch, capsys, *names: str, extra=()) -> str:
    """The stage fails with '<stage>: error: ...' naming every one of ``names``, and changes nothing."""
    before = snapshot(proj)
    code = run_stage(stage, *extra, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert code not in (0, None), f"{stage} succeeded; stderr: {err}"
    assert isinstance(code, str) and code.startswith(f"{stage}: error: "), code
    for name in names:
        assert name in code, f"{name!r} not named in: {code}"
    assert "Traceback" not in code + err
    assert snapshot(proj) == before, "a refused run changed the project"
    assert not list(proj.rglob("*.tmp")), "temporary file left behind"
    return code


def edit_params(proj: Path, edit) -> None:
    params = yaml.safe_load((proj / "params.yaml").read_text())
    edit(params)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def setp(dotted: str, value):
    def edit(params):
        node = params
        *path, last = dotted.split(".")
        for k in path:
            node = node[k]
        node[last] = value
    return edit


# ------------------------------------------------------------------ 1. params (checked before any work)


PARAMS_CASES = [
    (lambda p: p.update(distil={"alpha": 0.5}), "distil", "unknown section"),
    (setp("data.image_size", 0), "data.image_size", "between 8"),
    (setp("teacher.train.batch_size", 0), "teacher.train.batch_size", ">= 1"),
    (setp("distill.train.epochs", -1), "distill.train.epochs", ">= 0"),
    (setp("evaluate.repeats", 0), "evaluate.repeats", ">= 1"),
    (setp("data.limit", 0), "data.limit", ">= 1"),
    (setp("data.val_fraction", 1.5), "data.val_fraction", "between 0 and 1"),
    (setp("teacher.train.lr", "fast"), "teacher.train.lr", "expected float"),
    (setp("distill.temprature", 2), "distill.temprature", "unknown key"),
    (setp("student.train.schedule", "step"), "student.train.schedule", "one of"),
    (setp("teacher.arch", "vgg99"), "teacher.arch", "unknown model"),
    (setp("student_net.arch", "convnext_tiny"), "student_net.arch", "no BatchNorm2d"),
    (setp("quantize.models", ["distill", "prune_9"]), "quantize.models[1]", "prune_9"),
    (setp("prune.rounds.prune_1.parent", "teacher"), "prune.rounds.prune_1.parent", "not a model to prune"),
    (setp("prune.rounds.prune_1.width", 1.5), "prune.rounds.prune_1", "width"),
    (setp("prune.mode", "lyer"), "prune", "mode"),
    (setp("data.source", "web"), "data.source", "fashion-mnist"),
    (setp("seed", -3), "seed", "non-negative"),
    (setp("distill.alpha", 2), "distill.alpha", "[0, 1]"),
    (setp("teacher.train", 5), "teacher.train", "expected a mapping"),
    (lambda p: p["prune"]["rounds"]["prune_1"].pop("width"), "prune.rounds.prune_1.width", "missing"),
    (setp("teacher.weights", "/home/me/resnet18.pth"), "teacher.weights", "inside the project"),
    (setp("teacher.weights", "weights/../resnet18.pth"), "teacher.weights", "inside the project"),
    (setp("teacher.input_size", 4), "teacher.input_size", "between 8 and 1024"),
    (setp("teacher.input_norm", "imagenet1k"), "teacher.input_norm", "one of"),
    (setp("teacher.backbone_lr_mult", 0), "teacher.backbone_lr_mult", "(0, 1]"),
    (lambda p: p["teacher"].update(arch="efficientnet_lite0", small_input=True), "teacher.small_input",
     "input_size"),
    (setp("student_net.arch", "efficientnet_lite0"), "student_net.arch", "teacher only"),
    (setp("evaluate.confidence", 1.0), "evaluate.confidence", "[0, 1)"),
    (setp("evaluate.reference", "teacher"), "evaluate.reference", "one of control, distill"),
    (setp("prune.control.parent", "prune_1"), "prune.control.parent", "unpruned model"),
    (setp("distill.train.keep", "first"), "distill.train.keep", "one of best, last"),
]


@pytest.mark.parametrize("edit,key,what", PARAMS_CASES, ids=[c[1] + "-" + c[2].split()[0] for c in PARAMS_CASES])
def test_bad_params_are_refused_before_any_work(proj, monkeypatch, capsys, edit, key, what):
    edit_params(proj, edit)
    shutil.rmtree(proj / "data")  # prepare would rebuild it if it got past the params
    code = assert_refused(proj, "prepare", monkeypatch, capsys, key, what)
    assert code.startswith(f"prepare: error: params.yaml: {key}")
    assert not (proj / "data").exists()


@pytest.mark.parametrize("stage", ["teacher", "student", "distill"])
def test_every_training_stage_checks_the_whole_params_file(proj, monkeypatch, capsys, stage):
    edit_params(proj, setp("evaluate.repeats", 0))  # a section the stage does not even read
    assert_refused(proj, stage, monkeypatch, capsys, "evaluate.repeats")


def test_params_file_not_yaml(proj, monkeypatch, capsys):
    (proj / "params.yaml").write_text("data:\n  root: [unclosed\n")
    assert_refused(proj, "prepare", monkeypatch, capsys, "params.yaml", "not valid YAML")


def test_params_file_missing(proj, monkeypatch, capsys):
    assert_refused(proj, "prepare", monkeypatch, capsys, "nowhere.yaml", "not found", extra=("--params", "nowhere.yaml"))


# ------------------------------------------------------------------ 2. the user's images


def food(proj: Path) -> Path:
    return Path(yaml.safe_load((proj / "params.yaml").read_text())["data"]["root"])


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (with a valid CRC) claims ``width`` x ``height`` pixels: a decompression bomb."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


BAD_FILES = {
    "bomb": png_claiming(20000, 20000),  # over twice Pillow's limit: DecompressionBombError
    "bomb_warning": png_claiming(10000, 10000),  # over the limit: Pillow only warns, we refuse
    "text": b"this is not an image\n",
    "empty": b"",
    "truncated_jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_image_is_named(proj, monkeypatch, capsys, kind):
    bad = food(proj) / "training" / f"1_{kind}.png"
    bad.write_bytes(BAD_FILES[kind])
    code = assert_refused(proj, "prepare", monkeypatch, capsys, str(bad), "skip_bad")
    if kind.startswith("bomb"):
        assert "decompression-bomb limit" in code


@pytest.mark.parametrize("kind", ["bomb", "text"])
def test_bad_image_skipped_is_named_in_metrics_and_stderr(proj, monkeypatch, capsys, kind):
    bad = food(proj) / "training" / f"1_{kind}.png"
    bad.write_bytes(BAD_FILES[kind])
    edit_params(proj, setp("data.skip_bad", True))
    assert run_stage("prepare", monkeypatch=monkeypatch) == 0
    err = capsys.readouterr().err
    assert f"prepare: warning: skipped {bad}" in err and "Traceback" not in err
    assert yaml.safe_load((proj / "metrics/prepare.json").read_text())["skipped"] == 1
    details = yaml.safe_load((proj / "data/prepared/prepare.json").read_text())
    assert details["skipped"]["train"] == 1
    assert details["skipped_files"]["train"] == [f"training/1_{kind}.png"]


def test_bad_evaluation_image_is_an_error_even_with_skip_bad(proj, monkeypatch, capsys):
    bad = food(proj) / "evaluation" / "0007.jpg"
    bad.write_bytes(BAD_FILES["text"])
    edit_params(proj, setp("data.skip_bad", True))
    assert_refused(proj, "prepare", monkeypatch, capsys, str(bad), "evaluation/", "row per file")


def test_missing_data_root(proj, monkeypatch, capsys):
    edit_params(proj, setp("data.root", str(proj / "no-such-folder")))
    assert_refused(proj, "prepare", monkeypatch, capsys, "no-such-folder", "not found")


def test_unknown_layout(proj, monkeypatch, capsys):
    shutil.rmtree(food(proj) / "training")
    assert_refused(proj, "prepare", monkeypatch, capsys, str(food(proj)), "missing training folder")


def test_label_beyond_the_classes_file(proj, monkeypatch, capsys):
    (food(proj) / "classes.txt").write_text("a\nb\n")  # 3 labels in the files
    assert_refused(proj, "prepare", monkeypatch, capsys, "2_0.jpg", "out of range")


def test_file_name_without_a_label(proj, monkeypatch, capsys):
    write_image(food(proj) / "training" / "bread.jpg", 0)
    assert_refused(proj, "prepare", monkeypatch, capsys, "bread.jpg", "<label>_")


def test_hidden_files_and_folders_are_not_data(proj, monkeypatch, capsys):
    root = food(proj)
    (root / "training" / "._0_0.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS companion
    (root / "training" / ".0_9.jpg").write_bytes(b"junk")
    (root / "evaluation" / "Thumbs.db").write_bytes(b"junk")
    (root / "evaluation" / "._0000.jpg").write_bytes(b"junk")
    assert run_stage("prepare", monkeypatch=monkeypatch) == 0
    assert load_meta(proj / "data/prepared")["splits"]["train"] == 18
    assert load_split(proj / "data/prepared", "evaluation").ids == ["0000", "0001", "0002"]


def test_ipynb_checkpoints_is_not_a_class(tmp_path):
    root = make_imagefolder(tmp_path / "imgs")
    write_image(root / "train" / ".ipynb_checkpoints" / "cat0-checkpoint.png", 0)
    write_image(root / "train" / "__MACOSX" / "x.png", 0)
    prepare(DataParams(source="folder", root=str(root), image_size=16), tmp_path / "out", seed=0)
    assert load_meta(tmp_path / "out")["classes"] == ["cat", "dog"]


def test_classes_named_by_number_are_announced(proj, monkeypatch, capsys):
    assert run_stage("prepare", monkeypatch=monkeypatch) == 0
    err = capsys.readouterr().err
    assert "classes.txt: not found" in err and "named '0'..'2'" in err


NFC, NFD = "caf\u00e9", "cafe\u0301"  # the same word, one code point or two


@pytest.mark.parametrize("text, first, second", [
    ("apple\nbanana\n\napple\n", "'apple' on lines 1 and 4", None),  # the proj has 3 classes
    ("apple\n\nbanana\n  apple \n", "'apple' on lines 1 and 4", None),  # blank lines count; blanks around do not
    ("Apple\nbanana\napple\n", "'Apple' on lines 1 and 3", "'apple'"),
    (f"{NFC}\nbanana\n{NFD}\n", f"'{NFC}' on lines 1 and 3", repr(NFD)),
], ids=["same", "blanks", "case", "unicode-form"])
def test_a_class_named_twice_is_refused_with_both_lines(proj, monkeypatch, capsys, text, first, second):
    """Two classes of one name would be one row in predictions and the confusion matrix: refused by prepare."""
    (food(proj) / "classes.txt").write_text(text, encoding="utf-8")
    code = assert_refused(proj, "prepare", monkeypatch, capsys, "classes.txt", f"class name {first}")
    assert "\n" not in code and (second is None or f"line 3 reads {second}" in code), code


@pytest.mark.parametrize("classes, clash", [(("cat", "Dog", "dog"), ("Dog", "dog")), ((NFC, "dog", NFD), (NFD, NFC))],
                         ids=["case", "unicode-form"])
def test_imagefolder_class_folders_of_one_name_are_refused(tmp_path, classes, clash):
    root = make_imagefolder(tmp_path / "imgs", classes=classes)
    with pytest.raises(PrepareError) as e:
        prepare(DataParams(source="folder", root=str(root), image_size=16), tmp_path / "out", seed=0)
    message = str(e.value)  # the folders in sorted order, as they are listed
    assert message.startswith(f"{root / 'train'}: class folders {clash[0]!r} and {clash[1]!r} ") and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_test_split_is_stratified_and_a_missing_class_is_announced(tmp_path, capsys):
    root = make_food11(tmp_path / "f", classes=3, per_class=8)  # validation: 4 per class
    prepare(DataParams(source="folder", root=str(root), image_size=16), tmp_path / "a", seed=0)
    for split in ("val", "test"):
        assert sorted(load_split(tmp_path / "a", split).labels.tolist()) == [0, 0, 1, 1, 2, 2]
    for f in (root / "validation").glob("2_*.jpg"):
        if f.name != "2_0.jpg":
            f.unlink()  # one image of class 2: only one half can have it
    capsys.readouterr()
    prepare(DataParams(source="folder", root=str(root), image_size=16), tmp_path / "b", seed=0)
    err = capsys.readouterr().err
    assert "split has no images of class 2 ('2')" in err


# ------------------------------------------------------------------ 2b. every Pillow mode decodes as a viewer shows it


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_16bit_png_is_scaled_not_clipped_to_white(tmp_path):
    path = save(Image.fromarray(np.full((20, 20), 16000, dtype=np.uint16)), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    x = decode_image(path, 16)
    assert x.shape == (3, 16, 16) and int(x.float().mean().round()) == round(16000 / 257)  # 62, not 255


def test_32bit_int_image_outside_16bit_range_is_refused_by_name(tmp_path):
    with pytest.raises(PrepareError, match=r"x\.png.*mode I"):
        to_rgb(Image.fromarray(np.full((4, 4), 1 << 20, dtype=np.int32)), "x.png")


def test_float_image_is_refused_by_name(tmp_path):
    path = save(Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)), tmp_path / "float.tif")
    with pytest.raises(PrepareError, match=r"float\.tif: floating-point image \(mode F\)"):
        decode_image(path, 8)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    la = Image.new("LA", (8, 8), (0, 0))
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    for img, name, kw in ((rgba, "a.png", {}), (la, "b.png", {}), (pal, "c.png", {"transparency": 0})):
        x = decode_image(save(img, tmp_path / name, **kw), 8)
        assert (x == 255).all(), name  # fully transparent black is white, as a browser shows it


def test_cmyk_jpeg_and_bilevel_images(tmp_path):
    x = decode_image(save(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), tmp_path / "c.jpg", quality=95), 8)
    assert x.float().mean() > 245  # no ink is white
    x = decode_image(save(Image.new("1", (8, 8), 1), tmp_path / "b.bmp"), 8)
    assert (x == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[:, 4:] = 255  # right half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 3  # rotated 180 degrees
    x = decode_image(save(img, tmp_path / "r.png", exif=exif), 8)
    assert x[:, :, :4].float().mean() > 200 and x[:, :, 4:].float().mean() < 50


# ------------------------------------------------------------------ 3. artifacts and prepared data


def test_missing_teacher_checkpoint(proj, monkeypatch, capsys):
    (proj / "models/teacher.pt").unlink()
    assert_refused(proj, "distill", monkeypatch, capsys, "models/teacher.pt", "not found")


def test_truncated_teacher_checkpoint(proj, monkeypatch, capsys):
    path = proj / "models/teacher.pt"
    path.write_bytes(path.read_bytes()[:5000])
    assert_refused(proj, "distill", monkeypatch, capsys, "models/teacher.pt", "corrupt")


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Path.cwd() / 'PWNED'}",))


def test_unsafe_checkpoint_is_refused_and_never_run(proj, monkeypatch, capsys):
    torch.save({"model": Payload()}, proj / "models/teacher.pt")
    code = assert_refused(proj, "distill", monkeypatch, capsys, "models/teacher.pt", "not a trusted shrink artifact",
                          "Do not load it with weights_only=False")
    assert "weights_only=True" not in code
    assert not list(proj.parent.rglob("PWNED")) and not Path("PWNED").exists()


def test_a_bare_state_dict_is_not_a_checkpoint(proj, monkeypatch, capsys):
    torch.save(build_model("resnet18", 3).state_dict(), proj / "models/teacher.pt")
    assert_refused(proj, "distill", monkeypatch, capsys, "models/teacher.pt", "not a shrink checkpoint")


@pytest.mark.parametrize("stage", ["distill", "control"])
def test_teacher_of_other_classes(proj, stage, monkeypatch, capsys):
    """Every stage that reads the teacher checks it knows the data's classes: distill, and the control (and the
    rounds: one ``run_round``) when they fine-tune with KD."""
    meta = load_meta(proj / "data/prepared")
    own = {k: meta[k] for k in ("mean", "std", "image_size")}
    save_checkpoint(proj / "models/teacher.pt", build_model("resnet18", 5), name="resnet18", model_kwargs={},
                    num_classes=5, data_meta={**own, "classes": list("abcde")}, params={})
    if stage == "control":
        edit_params(proj, setp("prune.finetune.distill", True))
        save_checkpoint(proj / "models/distill.pt", build_model("studentnet", 3), name="studentnet", model_kwargs={},
                        num_classes=3, data_meta={**own, "classes": meta["classes"]}, params={})
    assert_refused(proj, stage, monkeypatch, capsys, "models/teacher.pt", "other classes")


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory) -> Path:
    """A resnet18 state_dict (random: it stands in for ImageNet weights, same keys and shapes)."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(build_model("resnet18", 1000).state_dict(), path)
    return path


def _write_weights(kind: str, good: Path, folder: Path) -> str:
    """A bad weights file under ``folder``; returns its teacher.weights path."""
    folder.mkdir(exist_ok=True)
    if kind == "missing":
        return "weights/resnet18.pth"
    if kind == "outside":
        shutil.copy(good, folder.parent / "models/resnet18.pth")
        return "models/resnet18.pth"
    if kind == "hash":
        shutil.copy(good, folder / "resnet18-deadbeef.pth")  # torchvision's naming, but not its sha256
        return "weights/resnet18-deadbeef.pth"
    path = folder / "resnet18.pth"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:4000])
    elif kind == "pickle":
        torch.save({"conv1.weight": Payload()}, path)
    elif kind == "not-a-state-dict":
        torch.save([1, 2, 3], path)
    elif kind == "other-arch":
        torch.save(build_model("mobilenet_v3_small", 1000).state_dict(), path)
    return "weights/resnet18.pth"


WEIGHTS_CASES = {
    "missing": ("weights file not found", "dvc import-url"),
    "outside": ("teacher.weights", "not inside weights/"),
    "hash": ("resnet18-deadbeef.pth", "does not start with deadbeef"),
    "truncated": ("resnet18.pth", "corrupt", "dvc update weights/resnet18.pth.dvc"),
    "pickle": ("resnet18.pth", "not a trusted", "dvc update weights/resnet18.pth.dvc"),
    "not-a-state-dict": ("resnet18.pth", "not a state_dict"),
    "other-arch": ("resnet18.pth", "does not fit teacher.arch resnet18", "missing conv1.weight"),
}


@pytest.mark.parametrize("kind", WEIGHTS_CASES)
def test_bad_teacher_weights_are_refused_before_training(proj, monkeypatch, capsys, resnet18_weights, kind):
    edit_params(proj, setp("teacher.weights", _write_weights(kind, resnet18_weights, proj / "weights")))
    assert_refused(proj, "teacher", monkeypatch, capsys, *WEIGHTS_CASES[kind])
    assert not list(proj.parent.rglob("PWNED"))


def test_prepared_data_missing(proj, monkeypatch, capsys):
    shutil.rmtree(proj / "data/prepared")
    assert_refused(proj, "student", monkeypatch, capsys, "data/prepared/meta.json", "run the prepare stage")


def test_prepared_split_corrupt(proj, monkeypatch, capsys):
    path = proj / "data/prepared/train.pt"
    path.write_bytes(path.read_bytes()[:300])
    assert_refused(proj, "student", monkeypatch, capsys, "data/prepared/train.pt", "corrupt")


def test_prepared_meta_corrupt(proj, monkeypatch, capsys):
    (proj / "data/prepared/meta.json").write_text("{not json")
    assert_refused(proj, "teacher", monkeypatch, capsys, "data/prepared/meta.json", "corrupt")


# ------------------------------------------------------------------ 4. tiny budgets just work (issue item 1)


def test_batch_larger_than_the_split_with_onecycle(proj, monkeypatch, capsys):
    """18 training images, batch 256, 4 epochs of OneCycle: 4 steps in all (crashed with ZeroDivisionError)."""
    edit_params(proj, lambda p: p["teacher"]["train"].update(epochs=4, batch_size=256, schedule="onecycle"))
    assert run_stage("teacher", monkeypatch=monkeypatch) == 0
    run = yaml.safe_load((proj / "models/teacher.run.json").read_text())  # the stage's details beside its checkpoint
    assert run["epochs"] == 4


def test_a_last_batch_of_one_image_trains(proj, monkeypatch, capsys):
    """18 images in batches of 17: the 1-image remainder would break BatchNorm on ResNet18's 1x1 features."""
    edit_params(proj, lambda p: p["teacher"]["train"].update(epochs=1, batch_size=17))
    assert run_stage("teacher", monkeypatch=monkeypatch) == 0


# ------------------------------------------------------------------ 5. predict input (shrink predict)


@pytest.fixture
def artifact(base_project, tmp_path) -> Path:
    meta = load_meta(base_project / "data/prepared")
    path = tmp_path / "student.pt"
    model = build_model("studentnet", 3, widths=[4] * 8)
    save_checkpoint(path, model, name="studentnet", model_kwargs={"widths": [4] * 8}, num_classes=3,
                    data_meta={k: meta[k] for k in ("classes", "mean", "std", "image_size")}, params={})
    return path


@pytest.mark.parametrize("kind", ["text", "empty", "bomb", "missing"])
def test_predict_names_unreadable_inputs(artifact, tmp_path, capsys, kind):
    good = tmp_path / "good.png"
    write_image(good, 0)
    bad = tmp_path / f"bad_{kind}.png"
    if kind != "missing":
        bad.write_bytes(BAD_FILES[kind])
    code = predict.main([str(bad), str(good), "--model", str(artifact)])
    out, err = capsys.readouterr()
    assert code == 1 and f"error: {bad}" in err and "Traceback" not in err
    assert out.startswith(f"{good}\t")  # the good file is still classified


@pytest.mark.parametrize("mode", ["named", "in-folder"])
def test_predict_never_reads_special_files_and_says_what_they_are(artifact, tmp_path, mode):
    """A named pipe and a symlink to /dev/zero (with image names): one line each saying what they are, named or
    found in a folder; the good image is still classified. In a subprocess with a timeout: reading the pipe
    would block for ever, reading /dev/zero would never end."""
    folder = tmp_path / "photos"
    folder.mkdir()
    good, pipe, zero = folder / "good.png", folder / "pipe.png", folder / "zero.jpg"
    write_image(good, 0)
    os.mkfifo(pipe)
    zero.symlink_to("/dev/zero")
    args = [str(pipe), str(zero), str(good)] if mode == "named" else [str(folder)]
    proc = subprocess.run([sys.executable, "-m", "shrink.predict", *args, "--model", str(artifact)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    errors = sorted(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert errors == [f"error: {pipe}: not a regular file (a named pipe)",
                      f"error: {zero}: not a regular file (a symbolic link to a character device, /dev/zero)"], proc.stderr
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stdout.splitlines() == [f"{good}\t{proc.stdout.split(chr(9))[-1].strip()}"]  # only the good file


def test_predict_refuses_an_unsafe_model(tmp_path, capsys):
    model = tmp_path / "model.pt"
    torch.save({"state_dict": Payload()}, model)
    with pytest.raises(SystemExit) as e:
        predict.main([str(tmp_path), "--model", str(model)])
    err = capsys.readouterr().err
    assert e.value.code != 0 and "not a trusted shrink artifact" in err and str(model) in err
    assert not Path("PWNED").exists()


# ------------------------------------------------------------------ 6. signals and concurrency (real processes, real DVC)


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sig")
    root = make_food11(base / "food", classes=3, per_class=6)

    def edit(params):
        params["data"].update(source="folder", root=str(root), limit=None)
        params["teacher"]["train"].update(epochs=500, batch_size=4)  # long enough to be interrupted

    proj = make_project(base / "proj", edit)
    dvc(proj, "repro", "prepare")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "prepared")
    return proj


def env_of(proj: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(proj / "src")}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"ended early ({proc.returncode})"
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)


def untracked(proj: Path) -> list[str]:
    return [line for line in git(proj, "status", "--porcelain", "--untracked-files=all").splitlines()
            if line.startswith("??")]


def test_kill_9_mid_write_leaves_no_temp_in_an_output_folder(dvc_project):
    proj = dvc_project
    writer = ("import time; from shrink.io import atomic_path\n"
              "with atomic_path('models/teacher.pt') as tmp:\n"
              "    tmp.write_bytes(b'half a checkpoint'); print(tmp, flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=proj, env=env_of(proj), stdout=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_file() and tmp.parent == proj / ".shrink-tmp" and tmp.name.startswith(f"{proc.pid}-teacher.pt-")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (proj / "models").exists() or not any((proj / "models").iterdir())
    assert tmp.exists() and not untracked(proj)  # the stale temp is out of git's (and every stage's) way
    subprocess.run([sys.executable, "-c", "from shrink.io import write_text; write_text('x', 'metrics/x.txt')"],
                   cwd=proj, env=env_of(proj), check=True)
    assert not tmp.exists()  # the next writer swept it
    (proj / "metrics/x.txt").unlink()


def test_ctrl_c_mid_stage_exits_130_without_traceback_or_output(dvc_project):
    proj = dvc_project
    cmd = [sys.executable, "stages/teacher.py", *STAGE_ARGS["teacher"]]
    # SIGINT back to its default in the child, as in a terminal: a background job of a non-interactive shell
    # (`make test &`, a CI runner's job) inherits SIGINT *ignored*, and Python then installs no handler for it
    proc = subprocess.Popen(cmd, cwd=proj, env=env_of(proj), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    wait_for(proj / "dvclive/teacher/metrics.json", proc)  # an epoch has finished: mid-training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "teacher: interrupted" in err and "Traceback" not in err + out
    assert not (proj / "models/teacher.pt").exists() and not (proj / "metrics/teacher.json").exists()
    shutil.rmtree(proj / "dvclive")


def test_kill_9_of_a_dvc_repro_records_nothing(dvc_project):
    proj = dvc_project
    lock = (proj / "dvc.lock").read_text()
    proc = subprocess.Popen(["dvc", "repro", "teacher"], cwd=proj, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(proj / "dvclive/teacher/metrics.json", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage, as a killed terminal would
    proc.wait()
    time.sleep(0.5)
    assert (proj / "dvc.lock").read_text() == lock
    assert not (proj / "models/teacher.pt").exists()
    assert not [p for p in proj.rglob("*.tmp") if ".shrink-tmp" not in p.parts and ".git" not in p.parts]
    status = dvc(proj, "status", "teacher", check=False)
    assert status.returncode == 0 and "Traceback" not in status.stderr  # no stale lock blocks the next command
    assert "teacher" in status.stdout
    shutil.rmtree(proj / "dvclive", ignore_errors=True)


def test_two_dvc_repro_at_once(dvc_project):
    """A `dvc repro` started while another runs is refused (the project is locked): one line, no traceback,
    nothing recorded; the running one is not disturbed."""
    proj = dvc_project
    lock = (proj / "dvc.lock").read_text()
    first = subprocess.Popen(["dvc", "repro", "teacher"], cwd=proj, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(proj / "dvclive/teacher/metrics.json", first)  # mid-training: the first one holds the lock
        second = dvc(proj, "repro", "-f", "prepare", check=False)
        assert first.poll() is None, "the first repro ended: the two did not overlap"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    out = second.stdout + second.stderr
    assert second.returncode != 0 and "Traceback" not in out
    # the loser is told which run blocks it (DVC's read/write lock on the stage's files)
    assert "is busy, it is being blocked by" in out and f"(PID {first.pid}): " in out and "dvc repro teacher" in out, out
    assert "Running stage 'prepare'" not in out
    assert (proj / "dvc.lock").read_text() == lock
    shutil.rmtree(proj / "dvclive", ignore_errors=True)
    assert "prepare" not in dvc(proj, "status", "prepare").stdout.replace("Data and pipelines are up to date.", "")


# ------------------------------------------------------------------ 7. the error contract itself


HOOKED = """
import sys
from shrink.config import ParamsError
from shrink.stage import stage_errors
with stage_errors("quantize"):  # the error contract of every stage (shrink.stage.stage)
    if sys.argv[1] == "user":
        raise ParamsError("params.yaml: quantize.calibration_images: must be >= 1, got 0")
    if sys.argv[1] == "missing":
        open("models/nowhere.pt", "rb")
    raise ZeroDivisionError("a bug")
"""


@pytest.mark.parametrize("kind,expected", [
    ("user", "quantize: error: params.yaml: quantize.calibration_images: must be >= 1, got 0"),
    ("missing", "quantize: error: models/nowhere.pt: No such file or directory"),
])
def test_one_line_hook_prints_one_line(tmp_path, kind, expected):
    proc = subprocess.run([sys.executable, "-c", HOOKED, kind], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 1 and proc.stderr.strip() == expected and "Traceback" not in proc.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    """Only expected faults are reworded: a programming error must stay debuggable."""
    proc = subprocess.run([sys.executable, "-c", HOOKED, "bug"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ZeroDivisionError: a bug" in proc.stderr


def test_a_changed_data_folder_reruns_prepare_and_only_then(dvc_project):
    """data.root is a dep of prepare (issue item 15): dvc status sees an added image, and nothing else."""
    proj = dvc_project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    root = Path(params["data"]["root"])
    assert dvc(proj, "status", "prepare").stdout.strip() == "Data and pipelines are up to date."
    added = root / "training" / "1_new.jpg"
    write_image(added, 1, seed=4242)
    try:
        out = dvc(proj, "status", "prepare").stdout
        assert "prepare:" in out and re.search(rf"modified:\s+{re.escape(str(root))}\n", out), out
    finally:
        added.unlink()
    assert dvc(proj, "status", "prepare").stdout.strip() == "Data and pipelines are up to date."
