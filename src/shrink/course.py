"""``shrink export-course``: write a model in the course's own 8-bit file layout (NTU ML2020 HW7).

The pipeline's ``<model>.uint8.pt`` uses the course's *scheme* (per tensor ``q = round((w - min) / (max -
min) * 255)``) in our own ``weights_only``-loadable container. A course notebook reads neither that
container nor our checkpoints; it reads what its ``encode8`` wrote: a ``pickle`` of a dict mapping every
``state_dict`` key to ``(min, max, uint8 ndarray)``, float64 ``min``/``max`` — and its ``decode8`` turns
that back into a ``state_dict`` for ``StudentNet(base=16, width_mult=1)``. This module writes exactly that
layout, quantizing in float64 as ``encode8`` does, so the notebook's ``decode8`` + ``load_state_dict``
take the file as is (tested against a copy of the course's ``decode8``).

Two deliberate differences, both invisible to ``decode8``: a constant tensor (``max == min``, where the
course's ``encode8`` divides by zero and stores NaNs) is stored as zeros, which ``decode8`` turns back
into the constant; and the file is written atomically. Integer buffers (BatchNorm's
``num_batches_tracked``) are encoded like every other tensor, as ``encode8`` does.

Nothing in the pipeline reads this format: a pickle can run code when loaded, so only load such a file
from someone you trust. Not imported by any stage (editing it invalidates nothing).
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Any

import numpy as np
import torch

from .io import atomic_path
from .quantize import read_pt, torch_model


def encode8(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The course's ``encode8`` dict for a state_dict: ``{key: (min, max, uint8 array)}`` (float64 math)."""
    out: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        w = np.float64(tensor.detach().cpu().numpy())
        if not isinstance(w, np.ndarray):  # a 0-d tensor: encode8 keeps the number itself
            out[name] = w
            continue
        lo, hi = np.min(w), np.max(w)
        scaled = np.zeros_like(w) if hi == lo else np.round((w - lo) / (hi - lo) * 255)
        out[name] = (lo, hi, np.uint8(scaled))
    return out


def export_course8(model_path: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write ``model_path`` (any ``.pt`` checkpoint or fp16/uint8 artifact of the pipeline) in the course's
    8-bit pickle layout at ``out``; returns its bytes on disk."""
    model = torch_model(read_pt(model_path))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(encode8(model.state_dict()), f)
    return os.path.getsize(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="shrink export-course",
        description="Write a model in the course's 8-bit file layout: a pickle of {state_dict key: (min, max, "
                    "uint8 array)}, what the course notebook's decode8() reads. The pipeline's own "
                    "<model>.uint8.pt uses the same scheme in a container that loads with weights_only=True.",
    )
    ap.add_argument("model", metavar="MODEL", help="a .pt checkpoint (e.g. models/distill.pt) or fp16/uint8 artifact")
    ap.add_argument("out", metavar="OUT", help="file to write, e.g. 8_bit_model.pkl")
    args = ap.parse_args(argv)
    try:
        size = export_course8(args.model, args.out)
    except (OSError, ValueError, KeyError) as e:
        print(f"shrink export-course: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {size:,} bytes (course 8-bit layout; limit in the course: 300,000)")
    return 0
