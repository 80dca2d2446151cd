"""prepare on generated folders and on each kind of bad input."""
from pathlib import Path

import pytest
import torch

from shrink.config import DataParams
from shrink.data import FOOD11_CLASSES, PrepareError, load_meta, load_split, prepare

from conftest import make_imagefolder


def _prep(root, out, **kw):
    return prepare(DataParams(source="folder", root=str(root), image_size=16, **kw), out, seed=0)


def test_food11_layout(food11, tmp_path):
    out = tmp_path / "prepared"
    metrics = _prep(food11, out)
    assert metrics["images"] == {"train": 12, "val": 3, "test": 3, "evaluation": 3}  # test = half of validation
    meta = load_meta(out)
    assert meta["classes"] == ["0", "1", "2"]
    train = load_split(out, "train")
    assert train.images.dtype == torch.uint8 and train.images.shape == (12, 3, 16, 16)
    assert sorted(train.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    ev = load_split(out, "evaluation")
    assert ev.ids == ["0000", "0001", "0002"] and (ev.labels == -1).all()
    assert metrics["per_class"]["train"] == {"0": 4, "1": 4, "2": 4}
    assert metrics["skipped"] == {"train": 0, "val": 0, "test": 0, "evaluation": 0}
    # val and test together are exactly the validation folder
    both = torch.cat([load_split(out, "val").labels, load_split(out, "test").labels])
    assert sorted(both.tolist()) == [0, 0, 1, 1, 2, 2]


def test_food11_class_names_from_sidecar_and_default_names(food11, tmp_path):
    (food11 / "classes.txt").write_text("bread\ndairy\ndessert\n")
    _prep(food11, tmp_path / "a")
    assert load_meta(tmp_path / "a")["classes"] == ["bread", "dairy", "dessert"]
    from conftest import make_food11

    full = make_food11(tmp_path / "full", classes=11, per_class=1, evaluation=0)
    _prep(full, tmp_path / "b")
    assert load_meta(tmp_path / "b")["classes"] == FOOD11_CLASSES


def test_imagefolder_layout_and_limit(tmp_path):
    root = make_imagefolder(tmp_path / "imgs")
    out = tmp_path / "prepared"
    metrics = _prep(root, out, limit=4)
    assert load_meta(out)["classes"] == ["cat", "dog"]
    assert metrics["images"] == {"train": 4, "val": 4, "test": 4}


def test_fashion_mnist_limit(tmp_path):
    out = tmp_path / "fm"
    metrics = prepare(DataParams(limit=50, image_size=32), out, seed=0)
    assert metrics["images"] == {"train": 50, "val": 50, "test": 50}
    x = load_split(out, "test").images
    assert x.shape == (50, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])  # gray -> 3 equal channels
    assert load_meta(out)["classes"][0] == "T-shirt/top"


# ------------------------------------------------------------------ bad input

def test_missing_split_folder(food11, tmp_path):
    import shutil

    shutil.rmtree(food11 / "validation")
    with pytest.raises(PrepareError, match=r"validation.*missing val"):
        _prep(food11, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(PrepareError, match="not found"):
        _prep(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="missing training folder"):
        _prep(tmp_path / "empty", tmp_path / "out")


def test_unparseable_label(food11, tmp_path):
    (food11 / "training" / "0_3.jpg").rename(food11 / "training" / "bread_3.jpg")
    with pytest.raises(PrepareError, match=r"bread_3\.jpg.*<label>_"):
        _prep(food11, tmp_path / "out")


def test_empty_class(tmp_path):
    root = make_imagefolder(tmp_path / "imgs")
    for f in (root / "val" / "dog").iterdir():
        f.unlink()
    with pytest.raises(PrepareError, match=r"val/dog.*class 'dog' has no images"):
        _prep(root, tmp_path / "out")


def test_class_without_training_images(food11, tmp_path):
    for f in (food11 / "training").glob("1_*.jpg"):
        f.unlink()
    with pytest.raises(PrepareError, match=r"class 1 .* no training images"):
        _prep(food11, tmp_path / "out")


@pytest.mark.parametrize("kind", ["truncated", "not-an-image"])
def test_unreadable_image_fails_and_leaves_nothing(food11, tmp_path, kind):
    bad = food11 / "training" / "2_1.jpg"
    if kind == "truncated":
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_text("this is not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match=r"2_1\.jpg: cannot read image"):
        _prep(food11, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "food-11"] == []  # no temp folder left either


def test_unreadable_image_skipped_when_asked(food11, tmp_path):
    (food11 / "training" / "2_1.jpg").write_text("garbage")
    metrics = _prep(food11, tmp_path / "out", skip_bad=True)
    assert metrics["skipped"]["train"] == 1
    assert metrics["images"]["train"] == 11


def test_failed_prepare_keeps_previous_output(food11, tmp_path):
    out = tmp_path / "out"
    _prep(food11, out)
    before = (out / "train.pt").read_bytes()
    (food11 / "training" / "0_0.jpg").write_text("garbage")
    with pytest.raises(PrepareError):
        _prep(food11, out)
    assert (out / "train.pt").read_bytes() == before
