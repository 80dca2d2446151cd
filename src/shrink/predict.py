"""``shrink predict``: classify image files with a model artifact, one ``path<TAB>class`` line per image.

The model is the pipeline's shipped artifact (``shipped/model.onnx``, written by the evaluate stage whichever
kind won, and declared in dvc.yaml as the artifact ``shrink-classifier``) unless ``--model`` names another.
Output lines are tab-separated values written by the ``csv`` module: a field holding a tab, a newline or a
double quote is double-quoted (quotes doubled), so a file name with a newline stays one record (read it back
with ``csv.reader(f, delimiter="\t")``).

Images are decoded exactly as the prepare stage decoded the training data (``data.decode_image``:
RGB, whole image resized to ``image_size`` with antialiasing), normalised with the artifact's own
mean/std and classified in batches. An unreadable file prints ``error: <path>: cannot read image (...)``
on stderr and the rest still run; so does a special file (a named pipe, a device, a socket, or a symlink to
one), named or found in a folder with an image's name: ``error: <path>: not a regular file (a named pipe)``,
and it is never opened. The exit code is 1 if any file failed, else 0.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import stat
import sys
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image

from .data import IMAGE_EXTENSIONS, PrepareError, decode_image, normalizer
from .runtime import load_runtime

SHIPPED = "shipped/model.onnx"  # the evaluate stage's stable copy of what ships (dvc.yaml: artifacts)


def shipped_artifact(path: str | Path = SHIPPED) -> str:
    """The shipped model's path, or a ValueError saying what to do when it is not there."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: not found; run `dvc repro` in the project folder, fetch it with "
                         f"`dvc artifacts get <repo> shrink-classifier`, or pass --model")
    return str(path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="shrink predict",
        description="Classify images with a compressed model. Prints one 'path<TAB>class' line per image; "
                    "unreadable files get an 'error:' line on stderr and make the exit code 1.",
    )
    ap.add_argument("paths", nargs="+", metavar="PATH",
                    help=f"image files, or folders searched recursively for {', '.join(e[1:] for e in IMAGE_EXTENSIONS)} files")
    ap.add_argument("--model", default=None, metavar="ARTIFACT",
                    help="fp32 / fp16 / uint8 .pt file or fp32 / int8 / int8w .onnx file (default: the shipped "
                         f"model, {SHIPPED})")
    ap.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for inference (default: %(default)s)")
    return ap


SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_file(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder, symlinks followed (``"a named pipe"``,
    ``"a symbolic link to a character device, /dev/zero"``); None for files, folders and missing paths.
    Only stats it: opening a pipe blocks until a writer comes, and a device can be read for ever."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = next((name for is_kind, name in SPECIAL_KINDS if is_kind(mode)), "an unknown kind of file")
    return f"a symbolic link to {kind}, {os.path.realpath(path)}" if path.is_symlink() else kind


def _expand(paths: Sequence[str], errors: list[str]) -> Iterator[Path]:
    """Files in argument order; folders expand to their images, sorted. Problems go to ``errors``, among them
    special files (pipes, devices, sockets), named or found in a folder with an image's name: never opened."""
    for arg in paths:
        p = Path(arg)
        if kind := special_file(p):
            errors.append(f"{p}: not a regular file ({kind})")
        elif p.is_dir():
            found, special = [], 0
            for f in sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS):
                if kind := special_file(f):
                    errors.append(f"{f}: not a regular file ({kind})")
                    special += 1
                elif f.is_file():
                    found.append(f)
            if not found and not special:
                errors.append(f"{p}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            yield from found
        elif p.is_file():
            yield p  # named explicitly: try it whatever its extension
        else:
            errors.append(f"{p}: no such file or folder")


def _batches(files: Iterator[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for f in files:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.threads < 1:
        ap.error("--batch-size and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    try:
        model = load_runtime(args.model or shipped_artifact(), threads=args.threads)
    except (FileNotFoundError, ValueError, KeyError) as e:
        ap.error(f"--model: {e}")
    data = model.meta["data"]
    classes, size, norm = data["classes"], int(data["image_size"]), normalizer(data)

    out = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    failed = 0
    problems: list[str] = []
    for batch in _batches(_expand(args.paths, problems), args.batch_size):
        for msg in problems:  # path problems found while expanding, reported in order
            print(f"error: {msg}", file=sys.stderr)
        failed += len(problems)
        problems.clear()
        images, good = [], []
        for path in batch:
            try:
                images.append(decode_image(path, size))
                good.append(path)
            except (PrepareError, Image.DecompressionBombError) as e:
                msg = str(e) if isinstance(e, PrepareError) else f"{path}: cannot read image ({e})"
                print(f"error: {msg}", file=sys.stderr)
                failed += 1
        if not images:
            continue
        pred = model(norm(torch.stack(images))).argmax(1).tolist()
        for path, k in zip(good, pred):
            out.writerow([str(path), classes[k]])
        sys.stdout.flush()
    for msg in problems:
        print(f"error: {msg}", file=sys.stderr)
    failed += len(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
