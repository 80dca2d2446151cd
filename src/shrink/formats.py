"""The quantization formats: one registry (timm-style), from which everything that lists formats is derived.

A format is one way to store a trained fp32 checkpoint smaller: its name (``int8w``), the suffix of its file
(``models/quantized/<model>.<suffix>``), how it is written (``save``) and how it runs (``load``, and the
``label`` that report.md's runtime column shows), its marker and colour in the charts, and a one-line
description. Every quantize stage writes every registered format; the evaluate stage measures each artifact,
and any of them can ship.

Everything that lists formats reads this registry: the allowed values of ``evaluate.ship`` (``config``),
``save_all`` (the quantize stage), ``runtime.load_runtime``, the evaluate stage's rows, the ship rule's tie
order (``tie_order``) and the charts. **Adding a format** is one ``register_format(Format(...))`` below and
its file in the ``outs`` of dvc.yaml's quantize stages; ``tests/test_formats.py`` checks that each
registered format saves, loads through ``load_runtime``, predicts what its fp32 checkpoint predicts, and
that dvc.yaml lists exactly these suffixes. The kind of a file is read from the file itself
(``quantize.artifact_kind``), so ``save`` must mark it: an ONNX file with ``kind: <name>`` in its shrink
metadata, a ``.pt`` file with ``"format": "shrink-<name>"``.

Registry order is the order the stages write and the reports list the formats (oldest first); the ship rule
breaks a tie in bytes the other way round, newest first (``tie_order``): int8w, int8, uint8, fp16.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .quantize import ONNX_META_KEY, read_pt, save_fp16, save_int8, save_int8w, save_uint8, torch_model
from .registry import Registry

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Format:
    """One quantization format (see the module doc).

    Attributes:
        name: the kind, e.g. ``"int8w"``: the ``<model>.<name>`` of report rows and ``evaluate.ship``'s value.
        suffix: the file's name after ``<model>.``, e.g. ``"int8w.onnx"``.
        save: ``save(checkpoint, calibration_images, path) -> bytes on disk``; writes atomically (the
            calibration images are normalised float training images; most formats ignore them).
        load: ``load(path, threads) -> runner`` mapping normalised float (N, 3, S, S) to logits.
        label: the runtime it runs in, as report.md's runtime column says it.
        marker, colour: its matplotlib style in the charts.
        description: one line for reports and docs.
    """

    name: str
    suffix: str
    save: Callable[[dict[str, Any], torch.Tensor, Path], int]
    load: Callable[[Path, int], Runner]
    label: str
    marker: str
    colour: str
    description: str


_FORMATS: Registry[Format] = Registry("quantization format")


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (after the others); a name or suffix already taken is an error."""
    if fmt.name == "fp32":
        raise ValueError("fp32 is the kind of the unquantized checkpoint, not a format")
    if any(get_format(n).suffix == fmt.suffix for n in list_formats() if n != fmt.name):
        raise ValueError(f"format {fmt.name!r}: suffix {fmt.suffix!r} is already another format's")
    return _FORMATS.add(fmt.name, fmt)


def list_formats() -> list[str]:
    """The registered formats' names, in registry order."""
    return _FORMATS.names()


def get_format(name: str) -> Format:
    """The registered format ``name``; a KeyError naming the known ones otherwise."""
    return _FORMATS.get(name)


def tie_order() -> list[str]:
    """The formats in the ship rule's tie order: at equal bytes the newest registered format ships."""
    return list_formats()[::-1]


def save_all(ckpt: dict[str, Any], calib_images_float: torch.Tensor, prefix: str | os.PathLike) -> dict[str, int]:
    """Every format's artifact of a checkpoint (``<prefix>.<suffix>``); returns ``{"<name>_bytes": size}``.

    Args:
        ckpt: a checkpoint dict (``checkpoint.save_checkpoint``'s).
        calib_images_float: normalised calibration images (``data.calibration_sample``).
        prefix: path prefix, e.g. ``models/quantized/distill``.
    """
    return {f"{n}_bytes": get_format(n).save(ckpt, calib_images_float, Path(f"{prefix}.{get_format(n).suffix}"))
            for n in list_formats()}


class OrtModel:
    """An ONNX file run by ONNX Runtime on the CPU: ``model(x)`` maps float NCHW to float logits.

    Spinning of ORT's worker threads is off: on a small, shared machine (and next to PyTorch's own
    OpenMP threads in the same process) spinning threads starve the ones doing work (measured on the
    2-vCPU VM under load, batch 64: median 3.2 ms without spinning vs 10.6 ms with it, same min).

    Args:
        path: the ``.onnx`` file (input ``"input"``).
        threads: intra-op threads.
        fold_weights: set ``session.disable_quant_qdq = 1``, so ORT constant-folds weight-only
            ``DequantizeLinear`` nodes into fp32 weights (the int8w format) instead of running them.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 2, fold_weights: bool = False) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: keep a predictor's stderr for its own messages
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if fold_weights:
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        self.options, self.fold_weights = opts, fold_weights
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for malformed files
            raise ValueError(f"{self.path}: not a loadable ONNX model ({e})") from e
        self.input_name = self.session.get_inputs()[0].name
        raw = self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
        self.meta: dict[str, Any] = json.loads(raw) if raw else {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu().float().contiguous()
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])


def _eager(path: Path, threads: int) -> Runner:
    return torch_model(read_pt(path))  # PyTorch's threads are set by whoever times it (runtime.interleaved)


# ---------------------------------------------------------------- the formats, in the order they were added

register_format(Format(
    "fp16", "fp16.pt", lambda ckpt, calib, path: save_fp16(ckpt, path), _eager,
    "PyTorch eager fp32 (fp16 weights)", "s", "tab:orange",
    "the checkpoint with half-precision weights, widened to fp32 on load"))
register_format(Format(
    "uint8", "uint8.pt", lambda ckpt, calib, path: save_uint8(ckpt, path), _eager,
    "PyTorch eager fp32 (uint8 weights)", "D", "tab:green",
    "the course's 8-bit min-max weights (BatchNorm statistics too), dequantized to fp32 on load"))
register_format(Format(
    "int8", "int8.onnx", save_int8, lambda path, threads: OrtModel(path, threads),
    "ORT int8 QDQ", "^", "tab:red",
    "static int8 ONNX (QDQ, per-channel 7-bit weights, uint8 activations calibrated on training images)"))
register_format(Format(
    "int8w", "int8w.onnx", lambda ckpt, calib, path: save_int8w(ckpt, path),
    lambda path, threads: OrtModel(path, threads, fold_weights=True),
    "ORT fp32 (int8 weights)", "v", "tab:purple",
    "weight-only int8 ONNX: per-channel int8 weights that ONNX Runtime folds back to fp32 at load"))
