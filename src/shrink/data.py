"""Decode a dataset once into compact uint8 tensors; every later stage loads those.

``prepare()`` writes, into one folder::

    train.pt, val.pt, test.pt      {"images": uint8 (N, 3, S, S), "labels": int64 (N,)}
    evaluation.pt                  unlabeled split (labels -1) with "ids", when the source has one
    meta.json                      classes, image size, per-channel mean/std of train, split sizes

Sources: Debian's Fashion-MNIST files (read with torchvision's own FashionMNIST reader), or a
folder in the Food-11 layout (``training/``, ``validation/``, ``evaluation/`` with files named
``<label>_<id>.jpg``) or the torchvision ImageFolder layout (``train/<class>/*.jpg``, ``val/``,
``test/``). When a source has no labelled test split, the test split is a seeded half of its
validation split (stratified: each class is halved).

Files every file browser hides are not data: names starting with "." (incl. macOS ``._*``
companions, ``.ipynb_checkpoints/``, ``.DS_Store``), ``__MACOSX/``, ``Thumbs.db``, ``desktop.ini``.
With ``skip_bad`` unreadable images are skipped and NAMED (stderr and ``<prepared>/prepare.json``),
except in the unlabeled ``evaluation/`` split: a submission must have a row per file, so a bad file
there is always an error.

Why one module of ~560 lines: the writers (``prepare``) and the readers (``load_split``, ``load_meta``,
``normalizer``, ``train_sample``) share the prepared format, which is defined here once.
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
import sys
import tempfile
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from .config import DataParams, UserError
from .io import atomic_dir, read_json, tmp_dir_for

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
HIDDEN_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}  # besides every name starting with "."
FOOD11_CLASSES = [
    "Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat",
    "Noodles/Pasta", "Rice", "Seafood", "Soup", "Vegetable/Fruit",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_LABEL_RE = re.compile(r"^(\d+)_")


class PrepareError(UserError):
    """The input dataset is missing, malformed or unreadable; the message names the file or folder."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, S, S)
    labels: torch.Tensor  # int64 (N,), -1 when unlabeled
    ids: list[str] | None = None


# ---------------------------------------------------------------- decoding

def is_hidden(path: Path) -> bool:
    """What file browsers hide: dot-names (``._x.jpg``, ``.ipynb_checkpoints``), ``__MACOSX``, ``Thumbs.db``..."""
    return path.name.startswith(".") or path.name.lower() in HIDDEN_NAMES


def to_rgb(img: Image.Image, path: Path | str = "image") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a viewer shows it; refuse, naming the mode, what has no
    faithful RGB view.

    16-bit grey (``I;16*``, and ``I``, which is how Pillow opens 16-bit PNGs) is scaled 65535 -> 255 (a plain
    ``convert("RGB")`` clips it to nearly white); transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a
    transparent colour) is composited on white, as on a web page; ``CMYK`` and ``YCbCr`` use Pillow's conversion.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img, dtype=np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise PrepareError(f"{path}: 32-bit integer image (mode {mode}) with values outside 0..65535; "
                               f"convert it to 8- or 16-bit first")
        return Image.fromarray(np.round(a / 257.0).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise PrepareError(f"{path}: floating-point image (mode F) has no standard 0..255 scale; "
                           f"convert it to an 8-bit image first")
    if mode == "P" and "transparency" in img.info or mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"):
        return img.convert("RGB")
    raise PrepareError(f"{path}: unsupported image mode {mode}; save it as an 8-bit RGB or greyscale image")


def decode_image(path: Path, size: int) -> torch.Tensor:
    """Open one image file and return it as uint8 (3, size, size); raises PrepareError naming the file.

    EXIF orientation is applied (a phone photo is seen upright); images larger than Pillow's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are refused, never decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.draft("RGB", (size, size))  # JPEG: let libjpeg downscale while decoding (much faster)
                img.load()
                img = to_rgb(ImageOps.exif_transpose(img), path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PrepareError(f"{path}: image too large to decode safely (over {Image.MAX_IMAGE_PIXELS:,} pixels, "
                           f"Pillow's decompression-bomb limit): {e}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, TypeError) as e:
        if isinstance(e, PrepareError):
            raise
        raise PrepareError(f"{path}: cannot read image ({e})") from None
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
    return resize_uint8(x.permute(2, 0, 1).unsqueeze(0), size)[0]


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) batch to (N, C, size, size) with antialiasing."""
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def warn(message: str) -> None:
    """A warning the user must see (stderr, above the progress bars); the run goes on."""
    tqdm.write(f"prepare: warning: {message}", file=sys.stderr)


def _decode_files(files: list[Path], size: int, skip_bad: bool, desc: str) -> tuple[torch.Tensor, list[int], list[Path]]:
    """Decode files; returns (images, indices of files kept, skipped files)."""
    images, kept, skipped = [], [], []
    for i, f in enumerate(tqdm(files, desc=desc, unit="img", leave=False)):
        try:
            images.append(decode_image(f, size))
            kept.append(i)
        except PrepareError as e:
            if not skip_bad:
                raise PrepareError(f"{e} (set data.skip_bad: true to skip unreadable images)") from None
            warn(f"skipped {e}")
            skipped.append(f)
    if not images:
        return torch.empty(0, 3, size, size, dtype=torch.uint8), kept, skipped
    return torch.stack(images), kept, skipped


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not is_hidden(p) and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise PrepareError(f"{path}: missing {what} folder")
    return path


# ---------------------------------------------------------------- sources

def _read_fashion_mnist(root: Path, scratch: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """Read Debian's (gzipped) IDX files through torchvision's FashionMNIST reader.

    The files are unzipped into a scratch folder beside the output's temps (``io.tmp_dir_for``), so a
    killed run's 55 MB are swept by the next run instead of staying in /tmp.
    """
    import torchvision

    folder, prefix = tmp_dir_for(scratch)
    with tempfile.TemporaryDirectory(prefix=prefix, suffix=".tmp", dir=folder) as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for split, names in FASHION_MNIST_FILES.items():
            for name in names:
                plain, gz = root / name, root / f"{name}.gz"
                if plain.is_file():
                    shutil.copyfile(plain, raw / name)
                elif gz.is_file():
                    with gzip.open(gz, "rb") as src, open(raw / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                else:
                    raise PrepareError(
                        f"{gz}: Fashion-MNIST file not found. Install Debian's package "
                        f"(sudo apt-get install -y dataset-fashion-mnist) or set data.root to a folder "
                        f"holding {name}[.gz]"
                    )
        out = {}
        classes: list[str] = []
        for split in FASHION_MNIST_FILES:
            ds = torchvision.datasets.FashionMNIST(tmp, train=(split == "train"), download=False)
            out[split] = (ds.data, ds.targets.long())
            classes = list(ds.classes)
    return out, classes


def food11_label(path: Path) -> int:
    """The label a Food-11 file name carries (``3_10.jpg``: 3); PrepareError naming the file if it has none."""
    m = _LABEL_RE.match(path.name)
    if not m:
        raise PrepareError(f"{path}: file name does not start with '<label>_' (Food-11 layout wants <label>_<id>.jpg)")
    return int(m.group(1))


def name_key(name: str) -> str:
    """What makes two class names one: they differ only in case, blanks around them or Unicode form (NFC vs NFD);
    predictions.csv, ``shrink predict`` and the confusion matrix could not tell such classes apart."""
    return unicodedata.normalize("NFC", name.strip()).casefold()


def first_clash(names: list[str]) -> tuple[int, int] | None:
    """Indices (i, j), i < j, of the first name that ``name_key`` makes one with an earlier name, else None."""
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        i = seen.setdefault(name_key(name), j)
        if i != j:
            return i, j
    return None


def _read_classes_file(path: Path) -> list[str]:
    """One class name per non-blank line; a name given twice (by ``name_key``) is refused with both lines."""
    if not path.is_file():
        raise PrepareError(f"{path}: classes file not found (data.classes_file)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise PrepareError(f"{path}: classes file is not UTF-8 text ({e.reason} at byte {e.start})") from None
    numbered = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise PrepareError(f"{path}: classes file is empty")
    names = [name for _, name in numbered]
    clash = first_clash(names)
    if clash is not None:
        (la, a), (lb, b) = numbered[clash[0]], numbered[clash[1]]
        why = ("each class needs a name of its own" if a == b else
               f"line {lb} reads {b!r}: names that differ only in case, blanks around them or Unicode form are one name")
        raise PrepareError(f"{path}: class name {a!r} on lines {la} and {lb} ({why})")
    return names


def _layout(root: Path) -> str:
    if (root / "training").is_dir():
        return "food11"
    if (root / "train").is_dir():
        return "imagefolder"
    raise PrepareError(
        f"{root}: missing training folder: expected the Food-11 layout (training/, validation/, "
        f"evaluation/) or the ImageFolder layout (train/<class>/, val/<class>/, test/<class>/)"
    )


# ---------------------------------------------------------------- prepare

def _subsample(n: int, limit: int | None, gen: torch.Generator) -> torch.Tensor:
    """Indices of at most ``limit`` items, a seeded random subset in original order."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=gen)[:limit].sort().values


def _stratified_half(labels: list[int], gen: torch.Generator) -> tuple[list[int], list[int]]:
    """Seeded split of range(len(labels)) into (kept, held-out) halves, each class halved (odd counts
    put the extra item in the first half), each in original order."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    kept, held = [], []
    for y in sorted(by_class):
        idx = by_class[y]
        perm = torch.randperm(len(idx), generator=gen).tolist()
        k = len(idx) // 2
        held += [idx[j] for j in perm[:k]]
        kept += [idx[j] for j in perm[k:]]
    return sorted(kept), sorted(held)


def _holdout(n: int, fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of range(n) into (kept, held-out) index sets, each in original order."""
    perm = torch.randperm(n, generator=gen)
    k = max(1, int(round(n * fraction)))
    return perm[k:].sort().values, perm[:k].sort().values


def _prepare_fashion_mnist(p: DataParams, gen: torch.Generator, scratch: Path) -> tuple[dict[str, Split], list[str], dict]:
    raw, classes = _read_fashion_mnist(Path(p.root), scratch)
    x_train, y_train = raw["train"]
    keep, val = _holdout(len(y_train), p.val_fraction, gen)
    parts = {"train": (x_train[keep], y_train[keep]), "val": (x_train[val], y_train[val]), "test": raw["test"]}
    splits = {}
    for name, (x, y) in parts.items():
        idx = _subsample(len(y), p.limit, gen)
        gray = x[idx].unsqueeze(1)  # (N, 1, 28, 28)
        splits[name] = Split(resize_uint8(gray, p.image_size).expand(-1, 3, -1, -1).contiguous(), y[idx])
    return splits, classes, {}


Files = dict[str, list[Path]]  # split -> image files
Labels = dict[str, list[int]]  # split -> class index per file (-1: unlabeled)


def _food11_files(root: Path, p: DataParams) -> tuple[Files, Labels, list[str]]:
    """The Food-11 layout's files, labels (from ``<label>_<id>`` names) and class names (``classes.txt``,
    ``data.classes_file``, Food-11's own eleven, or the label numbers with a warning)."""
    files: Files = {}
    labels: Labels = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        files[split] = _list_images(_require_dir(root / folder, f"{split} ({folder}/)"))
        labels[split] = [food11_label(f) for f in files[split]]
    if (root / "testing").is_dir():
        files["test"] = _list_images(root / "testing")
        labels["test"] = [food11_label(f) for f in files["test"]]
    if (root / "evaluation").is_dir():
        files["evaluation"] = _list_images(root / "evaluation")
        labels["evaluation"] = [-1] * len(files["evaluation"])
    sidecar = Path(p.classes_file) if p.classes_file else root / "classes.txt"
    n = max(labels["train"] + labels["val"], default=-1) + 1
    if sidecar.is_file() or p.classes_file:
        classes = _read_classes_file(sidecar)
    elif n == len(FOOD11_CLASSES):
        classes = FOOD11_CLASSES[:]
    else:
        classes = [str(i) for i in range(n)]
        warn(f"{sidecar}: not found and the labels are 0..{n - 1} (not Food-11's 11 classes): classes are "
             f"named '0'..'{n - 1}'; write one name per line there (or set data.classes_file) to name them")
    for split in ("train", "val", "test"):
        for f, y in zip(files.get(split, []), labels.get(split, [])):
            if y >= len(classes):
                raise PrepareError(f"{f}: label {y} is out of range for {len(classes)} classes ({sidecar})")
    return files, labels, classes


def _imagefolder_files(root: Path) -> tuple[Files, Labels, list[str]]:
    """The ImageFolder layout's files, labels and class names (the folders of ``train/``, sorted)."""
    train = root / "train"
    classes = sorted(d.name for d in train.iterdir() if d.is_dir() and not is_hidden(d))
    if not classes:
        raise PrepareError(f"{train}: no class folders (ImageFolder layout wants train/<class>/*.jpg)")
    clash = first_clash(classes)
    if clash is not None:
        a, b = (classes[i] for i in clash)
        raise PrepareError(f"{train}: class folders {a!r} and {b!r} name one class (they differ only in case, "
                           f"blanks around them or Unicode form); merge them or rename one")
    files: Files = {}
    labels: Labels = {}
    for split, folder in (("train", "train"), ("val", "val"), ("test", "test")):
        d = root / folder
        if split != "test":
            _require_dir(d, f"{split} ({folder}/)")
        elif not d.is_dir():
            continue
        files[split], labels[split] = [], []
        for c, name in enumerate(classes):
            class_dir = _require_dir(d / name, f"class '{name}'")
            found = _list_images(class_dir)
            if not found:
                raise PrepareError(f"{class_dir}: class '{name}' has no images")
            files[split] += found
            labels[split] += [c] * len(found)
    return files, labels, classes


def _check_and_split_test(root: Path, files: Files, labels: Labels, classes: list[str], gen: torch.Generator) -> None:
    """Refuse a class without training images; without a labelled test split, make one of a seeded,
    stratified half of validation (in place); warn about classes that val or test lack."""
    counts = Counter(labels["train"])  # every class must have training images, or no model could learn it
    for c, name in enumerate(classes):
        if counts[c] == 0:
            raise PrepareError(f"{root}: class {c} ('{name}') has no training images")
    if "test" not in files:
        keep, test = _stratified_half(labels["val"], gen)
        files["test"] = [files["val"][i] for i in test]
        labels["test"] = [labels["val"][i] for i in test]
        files["val"] = [files["val"][i] for i in keep]
        labels["val"] = [labels["val"][i] for i in keep]
    for split in ("val", "test"):
        missing = [f"{c} ('{classes[c]}')" for c in range(len(classes)) if c not in set(labels[split])]
        if missing:
            warn(f"{root}: the {split} split has no images of class {', '.join(missing)}; its accuracy "
                 f"cannot show how well these are recognised (add validation images of these classes)")


def _prepare_folder(p: DataParams, gen: torch.Generator) -> tuple[dict[str, Split], list[str], dict]:
    root = Path(p.root)
    if not root.is_dir():
        raise PrepareError(f"{root}: data.root folder not found")
    layout = _layout(root)
    files, labels, classes = _food11_files(root, p) if layout == "food11" else _imagefolder_files(root)
    _check_and_split_test(root, files, labels, classes, gen)

    splits, skipped, skipped_files = {}, {}, {}
    for name in ("train", "val", "test", "evaluation"):
        if name not in files:
            continue
        # every evaluation file gets a row in predictions.csv: a file skipped there would be a
        # submission with a missing row, so there a bad file is always an error
        skip_bad = p.skip_bad and name != "evaluation"
        idx = _subsample(len(files[name]), p.limit, gen).tolist()
        chosen = [files[name][i] for i in idx]
        try:
            images, kept, bad = _decode_files(chosen, p.image_size, skip_bad, desc=f"decode {name}")
        except PrepareError as e:
            if name == "evaluation" and p.skip_bad:
                raise PrepareError(f"{e}; data.skip_bad does not apply to the unlabeled evaluation/ split "
                                   f"(its predictions.csv needs a row per file): fix or remove the file") from None
            raise
        y = torch.tensor([labels[name][idx[i]] for i in kept], dtype=torch.long)
        ids = [chosen[i].stem for i in kept] if name == "evaluation" else None
        splits[name] = Split(images, y, ids)
        skipped[name] = len(bad)
        skipped_files[name] = [str(f.relative_to(root)) for f in bad]
    return splits, classes, {"skipped": skipped, "skipped_files": skipped_files, "layout": layout}


def prepare(p: DataParams, out_dir: str | Path, seed: int) -> dict[str, Any]:
    """Decode the dataset described by ``p`` into ``out_dir`` (replaced atomically); returns its counts
    (also written to ``out_dir/prepare.json``; ``headline`` picks the metrics).

    Args:
        p: the ``data`` params.
        out_dir: destination folder (e.g. ``data/prepared``).
        seed: seeds the validation hold-out and ``limit`` subsampling.
    """
    gen = torch.Generator().manual_seed(seed)
    if p.source == "fashion-mnist":
        splits, classes, info = _prepare_fashion_mnist(p, gen, Path(out_dir).with_name("fashion-mnist-raw"))
    elif p.source == "folder":
        splits, classes, info = _prepare_folder(p, gen)
    else:
        raise PrepareError(f"params.yaml: data.source must be 'fashion-mnist' or 'folder', got {p.source!r}")
    for name in ("train", "val", "test"):
        if len(splits[name].labels) == 0:
            raise PrepareError(f"{p.root}: the {name} split has no readable images")
    if len(splits["train"].labels) < 2:
        raise PrepareError(f"{p.root}: the train split has 1 image; training needs at least 2")

    x = splits["train"].images.float() / 255
    meta = {
        "source": p.source,
        "classes": classes,
        "image_size": p.image_size,
        "mean": x.mean(dim=(0, 2, 3)).tolist(),
        "std": x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist(),
        "splits": {k: len(s.labels) for k, s in splits.items()},
        **info,
    }
    details: dict[str, Any] = {"images": meta["splits"], "classes": len(classes)}
    details["per_class"] = {
        name: {classes[c]: n for c, n in sorted(Counter(s.labels.tolist()).items()) if c >= 0}
        for name, s in splits.items() if name != "evaluation"
    }
    if "skipped" in info:
        details["skipped"] = info["skipped"]
        details["skipped_files"] = info["skipped_files"]  # relative to data.root
    with atomic_dir(out_dir) as tmp:  # build the whole folder aside, then swap it in
        for name, s in splits.items():
            obj = {"images": s.images, "labels": s.labels}
            if s.ids is not None:
                obj["ids"] = s.ids
            torch.save(obj, tmp / f"{name}.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / DETAILS).write_text(json.dumps(details, indent=2) + "\n")
    return details


DETAILS = "prepare.json"  # in the prepared folder: per-split and per-class counts, skipped files (not a metric)


def headline(details: dict[str, Any]) -> dict[str, Any]:
    """The metrics of prepare (``dvc metrics diff`` / ``dvc exp show``): total images, classes and, for a folder
    source, how many files were skipped; per-split and per-class counts stay in ``DETAILS``."""
    out = {"images": sum(details["images"].values()), "classes": details["classes"]}
    if "skipped" in details:
        out["skipped"] = sum(details["skipped"].values())
    return out


# ---------------------------------------------------------------- loading

def load_meta(prepared: str | Path) -> dict[str, Any]:
    path = Path(prepared) / "meta.json"
    if not path.is_file():
        raise PrepareError(f"{path}: prepared data not found; run the prepare stage first (dvc repro prepare)")
    try:
        meta = read_json(path)
        assert isinstance(meta, dict) and {"classes", "mean", "std", "image_size"} <= set(meta)
    except (ValueError, AssertionError, UnicodeDecodeError):
        raise PrepareError(f"{path}: corrupt prepared data; rerun the prepare stage (dvc repro -f prepare)") from None
    return meta


def load_split(prepared: str | Path, split: str) -> Split:
    """Load one prepared split, memory-mapped (no copy until used)."""
    path = Path(prepared) / f"{split}.pt"
    if not path.is_file():
        raise PrepareError(f"{path}: prepared split '{split}' not found; rerun the prepare stage (dvc repro prepare)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        split_ = Split(obj["images"], obj["labels"], obj.get("ids"))
        assert split_.images.dtype == torch.uint8 and split_.images.ndim == 4 and len(split_.labels) == len(split_.images)
    except Exception as e:  # truncated zip, unpickling refused, wrong content
        raise PrepareError(f"{path}: corrupt or not a prepared split ({type(e).__name__}); rerun the prepare "
                           f"stage (dvc repro -f prepare)") from None
    return split_


def normalizer(meta: dict[str, Any], device: torch.device | str = "cpu"):
    """A function mapping uint8 (N, 3, H, W) to normalised float32, with the train split's mean/std."""
    mean = torch.tensor(meta["mean"], device=device).view(1, -1, 1, 1) * 255
    std = torch.tensor(meta["std"], device=device).view(1, -1, 1, 1) * 255

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x.to(device, non_blocking=True).float() - mean) / std

    return norm


def data_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of the prepared meta a checkpoint carries so it can be used alone."""
    return {k: meta[k] for k in ("classes", "mean", "std", "image_size")}


def train_sample(prepared: str | Path, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised float32 training images and their labels, a seeded random sample (a folder source's
    train split is ordered by class), in split order: int8 calibration, a pruning criterion's gradients.

    Args:
        prepared: the prepared data folder.
        n: images wanted (all of them when the split is smaller).
        seed: the project seed.
    """
    train = load_split(prepared, "train")
    pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return normalizer(load_meta(prepared))(train.images[pick]), train.labels[pick].long()


def calibration_sample(prepared: str | Path, n: int, seed: int) -> torch.Tensor:
    """``n`` normalised float32 training images for int8 calibration (``train_sample``'s images)."""
    return train_sample(prepared, n, seed)[0]
