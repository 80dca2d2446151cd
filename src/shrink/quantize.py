"""Quantization: the course's 8-bit weight file, fp16, and real int8 inference with ONNX Runtime.

Artifacts (all self-contained; each carries ``model``, ``model_kwargs``, ``num_classes`` and the data
meta ``{classes, mean, std, image_size}``, so ``shrink.runtime.load_runtime`` and ``shrink predict`` need
nothing else):

* **uint8** (``save_uint8``), the course's min-max scheme, for *storage*: per floating tensor
  ``q = round((w - min) / (max - min) * 255)`` as uint8 plus its ``min`` and ``max`` (fp32); loading
  computes ``w = q / 255 * (max - min) + min`` back into a float32 model (so inference runs in fp32).
  A constant tensor (``max == min``) stores ``q = 0`` and comes back exactly. Float tensors with
  ``numel <= 2`` stay exact in fp32 (``4 n <= n + 8`` bytes: uint8 plus its min/max would not be
  smaller); non-float tensors (BatchNorm's ``num_batches_tracked``) stay as they are. Like the course,
  BatchNorm running statistics are quantized too. The file is a ``torch.save`` dict loadable with
  ``weights_only=True``::

      {"format": "shrink-uint8", "version": 1, "model", "model_kwargs", "num_classes", "data", "params",
       "q": uint8 (sum of numels,),            every quantized tensor, flattened and concatenated
       "minmax": float32 (K, 2),               min, max of the K quantized tensors, in index order
       "raw": {"torch.int64": (M,), ...},      kept tensors, concatenated per dtype
       "index": [(name, shape, "q8" | dtype), ...]}   state_dict order; offsets follow from shapes

  Why flat buffers: ``torch.save`` stores every tensor as its own zip entry (about 150-200 bytes of headers
  each), so a dict of per-tensor ``{q, min, max}`` would not fit the course's 300,000-byte limit for
  StudentNet; flat buffers do (sizes: docs/experiments/2026-11-25-quantized-formats.md).

* **fp16** (``save_fp16``): the checkpoint with floating state_dict tensors in half precision.

* **int8 ONNX** (``save_int8``): static int8 (QDQ, per-channel int8 weights held to 7 bits with
  ``reduce_range`` so that CPUs without VNNI do not saturate, uint8 activations, MinMax calibration on
  normalised training images) with ``onnxruntime.quantization.quantize_static``, from the
  one fp32 exporter ``export_onnx`` (TorchScript exporter, opset 17, input ``"input"`` with a dynamic batch
  axis, output ``"logits"``; eval-mode export folds BatchNorm into the convolutions).

* **int8w ONNX** (``save_int8w``): *weight-only* int8. Every Conv/Gemm weight is stored as per-output-channel
  symmetric int8 (``q = round(w / s)``, ``s = max|w| / 127``, no zero point) followed by a
  ``DequantizeLinear``; activations stay fp32. ONNX Runtime must run it with the session option
  ``session.disable_quant_qdq = 1`` (its entry in ``shrink.formats`` sets it): ORT then constant-folds each
  ``DequantizeLinear`` into an fp32 weight at load time and runs exactly the fp32 graph (same kernels, same
  speed); without it ORT 1.31 keeps the nodes and runs 2-5x slower. Sizes, in bytes: the scales and the
  biases (BatchNorm folded into them) are stored as fp16 followed by a ``Cast`` (folded the same way), so
  a channel costs 4 bytes besides its int8 weights, the same as the uint8 file's four BatchNorm bytes; every
  tensor and node gets a short name and no doc string (the exporter's names such as
  ``onnx::Conv_123`` and ``cnn.3.3.weight`` were ~3-4 % of a pruned file).

Every ONNX artifact carries its meta (the keys above plus ``kind``, compact JSON) in the model's
``metadata_props`` under ``"shrink"``; no sidecar file.

Which formats exist, and how each runs, is ``shrink.formats`` (the registry; its ``save_all`` is the quantize
stage); timing lives in ``shrink.runtime`` (one loader and one timer for evaluate, the benchmark and predict).
This module only writes and reads artifacts, so editing a benchmark never invalidates the quantize stage.
Why a weight-only int8 file beside static int8: docs/experiments/2026-11-25-quantized-formats.md.

Why one module of ~500 lines: each writer sits beside the reader of the file layout the list above documents,
so a format's bytes are described, written and read in one place.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import safe_torch_load, model_from_checkpoint
from .io import atomic_path, save_torch

FORMAT_PREFIX = "shrink-"  # a .pt artifact's "format" is FORMAT_PREFIX + its kind (pt_kind reads it)
UINT8_FORMAT = FORMAT_PREFIX + "uint8"
FP16_FORMAT = FORMAT_PREFIX + "fp16"
ONNX_META_KEY = "shrink"
# The checkpoint keys an artifact keeps besides the weights: enough to rebuild and use the model alone.
META_KEYS = ("model", "model_kwargs", "num_classes", "data")
_LEVELS = 255  # 2**8 - 1, the course's scale


def artifact_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint an artifact carries: model name/kwargs, num_classes, data meta."""
    missing = [k for k in META_KEYS if k not in ckpt]
    if missing:
        raise KeyError(f"checkpoint lacks {missing}; expected the dict written by save_checkpoint")
    return {k: ckpt[k] for k in META_KEYS}


# ---------------------------------------------------------------- uint8 min-max (the course's scheme)

def quantize_tensor(w: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Min-max quantize one float tensor: ``(q uint8, min, max)``; a constant tensor gives ``q = 0``."""
    if not torch.isfinite(w).all():
        raise ValueError("cannot quantize a tensor with NaN or inf values")
    w64 = w.detach().double()
    lo, hi = w64.min().item(), w64.max().item()
    if hi == lo:  # constant tensor: every value is min, no division
        return torch.zeros(w.shape, dtype=torch.uint8), lo, hi
    q = ((w64 - lo) / (hi - lo) * _LEVELS).round_().clamp_(0, _LEVELS).to(torch.uint8)
    return q, lo, hi


def dequantize_tensor(q: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``w = q / 255 * (max - min) + min`` as float32 (computed in float64, then rounded once)."""
    return (q.double() / _LEVELS * (hi - lo) + lo).float()


def _keeps_exact(v: torch.Tensor) -> bool:
    # uint8 plus an fp32 min and max costs numel + 8 bytes; fp32 costs 4 * numel
    return not v.is_floating_point() or 4 * v.numel() <= v.numel() + 8


def quantize_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Pack a state_dict into the flat uint8 form: ``{"q", "minmax", "raw", "index"}`` (see module doc)."""
    qs, minmax, index = [], [], []
    raw: dict[str, list[torch.Tensor]] = {}
    for name, v in state_dict.items():
        v = v.detach().cpu()
        if _keeps_exact(v):
            raw.setdefault(str(v.dtype), []).append(v.reshape(-1))
            index.append((name, list(v.shape), str(v.dtype)))
        else:
            q, lo, hi = quantize_tensor(v)
            qs.append(q.reshape(-1))
            minmax.append((lo, hi))
            index.append((name, list(v.shape), "q8"))
    return {
        "q": torch.cat(qs) if qs else torch.empty(0, dtype=torch.uint8),
        # fp32 min/max: exact for fp32 weights, whose extremes are fp32 numbers
        "minmax": torch.tensor(minmax, dtype=torch.float32).reshape(-1, 2),
        "raw": {dt: torch.cat(ts) for dt, ts in raw.items()},
        "index": index,
    }


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in uint8 artifact")
    return dt


def dequantize_state_dict(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of ``quantize_state_dict``: float32 tensors from uint8, kept tensors as stored."""
    q, minmax = packed["q"], packed["minmax"].double()
    offsets = {dt: 0 for dt in packed["raw"]}
    qpos, k, out = 0, 0, {}
    for name, shape, store in packed["index"]:
        n = math.prod(shape)
        if store == "q8":
            lo, hi = minmax[k].tolist()
            out[name] = dequantize_tensor(q[qpos : qpos + n], lo, hi).reshape(shape)
            qpos, k = qpos + n, k + 1
        else:
            buf, start = packed["raw"][store], offsets[store]
            if buf.dtype != _dtype(store):
                raise ValueError(f"uint8 artifact: buffer {store} holds {buf.dtype}")
            out[name] = buf[start : start + n].clone().reshape(shape)
            offsets[store] = start + n
    if qpos != q.numel() or k != len(minmax):
        raise ValueError("uint8 artifact: index does not match its buffers")
    return out


def save_uint8(ckpt: dict[str, Any], path: str | os.PathLike) -> int:
    """Write the course's 8-bit min-max artifact of a checkpoint dict atomically; returns its bytes on disk.

    Args:
        ckpt: a checkpoint dict (``save_checkpoint``'s format); its ``params`` are kept for provenance.
        path: destination ``.pt`` file.
    """
    obj = {"format": UINT8_FORMAT, "version": 1, **artifact_meta(ckpt), "params": ckpt.get("params", {}),
           **quantize_state_dict(ckpt["state_dict"])}
    save_torch(obj, path)
    return os.path.getsize(path)


# ---------------------------------------------------------------- fp16

def save_fp16(ckpt: dict[str, Any], path: str | os.PathLike) -> int:
    """Write the checkpoint with its floating state_dict tensors in half precision; returns bytes on disk."""
    sd = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in ckpt["state_dict"].items()}
    save_torch({**ckpt, "format": FP16_FORMAT, "state_dict": sd}, path)
    return os.path.getsize(path)


# ---------------------------------------------------------------- ONNX: one exporter, two int8 writers

def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, *,
                meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` as fp32 ONNX atomically: input ``"input"`` (dynamic batch), output ``"logits"``.

    The one exporter of the project (the quantized writers and the fp32 runtimes of evaluate and the
    benchmark all start from it). TorchScript-based (``dynamo=False``, opset 17): it folds eval-mode
    BatchNorm into the convolutions. It warns that it is deprecated; the ``dynamo=True`` exporter was
    checked to give the same graph (opset 18).

    Args:
        model: the float network (copied to the CPU in eval mode; the original is left alone).
        example: a float (N, C, H, W) input; H, W fix the exported spatial size.
        path: destination ``.onnx`` file.
        meta: stored as compact JSON in ``metadata_props["shrink"]`` (``artifact_meta`` plus ``kind``).
    """
    import onnx

    model = copy.deepcopy(model).cpu().float().eval()
    with tempfile.TemporaryDirectory(prefix="shrink-onnx-") as tmp:
        raw = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer and deprecation warnings say nothing about this model
            torch.onnx.export(
                model, (example.detach().float().cpu(),), str(raw), dynamo=False, opset_version=17,
                do_constant_folding=True, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        proto = onnx.load(str(raw))
    _save_onnx(proto, path, meta)


def _save_onnx(proto, path: str | os.PathLike, meta: dict[str, Any] | None) -> None:
    import onnx

    if meta is not None:
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_META_KEY, json.dumps(meta, separators=(",", ":"))
    with atomic_path(path) as tmp_path:
        onnx.save(proto, str(tmp_path))


def _calibration(calib_images_float: torch.Tensor) -> torch.Tensor:
    x = calib_images_float.detach().float().cpu()
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"calibration images must be a non-empty (N, C, H, W) float tensor, got {tuple(x.shape)}")
    return x


def export_int8(
    model: nn.Module,
    calib_images_float: torch.Tensor,
    path: str | os.PathLike,
    *,
    meta: dict[str, Any] | None = None,
    batch_size: int = 64,
) -> None:
    """Export ``model`` to a statically quantized int8 ONNX file (QDQ, per-channel 7-bit weights), atomically.

    Args:
        model: the float network.
        calib_images_float: normalised float32 (N, 3, H, W) images for calibration (a few hundred train
            images); H, W fix the exported spatial size, the batch axis stays dynamic.
        path: destination ``.onnx`` file.
        meta: ``artifact_meta(ckpt)``, stored with ``kind: int8`` in ``metadata_props["shrink"]``.
        batch_size: calibration batch size.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = _calibration(calib_images_float)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(x), batch_size))

        def get_next(self) -> dict | None:
            start = next(self.batches, None)
            return None if start is None else {"input": x[start : start + batch_size].numpy()}

    with tempfile.TemporaryDirectory(prefix="shrink-int8-") as tmp:
        fp32, pre, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        export_onnx(model, x[:1], fp32)
        quant_pre_process(str(fp32), str(pre))  # shape inference + graph clean-up, as ORT recommends
        # reduce_range: 7-bit weights. Without it, CPUs lacking VNNI (AVX2, AVX-512 without VNNI) saturate the
        # u8 x s8 pair sums of their int8 kernels (vpmaddubsw): measured on an AVX2 machine, the distilled student
        # lost 0.6 points and the pruned one 1.8-2.0 (0.8772 vs 0.8967 fp32); with it both stay within 0.05 points
        # of fp32. The artifact is shipped to machines we don't know, so it must be right on all of them.
        quantize_static(
            str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(int8))
    _save_onnx(proto, path, None if meta is None else {**meta, "kind": "int8"})


def weight_only_int8(proto) -> Any:
    """Rewrite an fp32 ONNX model in place: Conv/Gemm weights to per-channel symmetric int8 + DequantizeLinear.

    Scales and biases go to fp16 + Cast; every tensor and node gets a short name; doc strings go; attributes
    that equal their defaults go and equal constants are shared (``_compact``), so a small net's file is
    mostly its weights. The graph's input and output names stay. Returns ``proto``.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    consts = []  # (name, array) of the new initializers
    front = []  # DequantizeLinear / Cast nodes, placed before every consumer
    done: set[str] = set()
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        wname = node.input[1]
        if wname in done:
            continue
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        axis = 1 if node.op_type == "Gemm" and not trans_b else 0  # the output-channel axis
        reduce = tuple(d for d in range(w.ndim) if d != axis)
        scale = (np.abs(w).max(axis=reduce) / 127.0).astype(np.float16)
        scale[scale == 0] = 1.0  # an all-zero channel stays zero
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.astype(np.float32).reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.remove(inits.pop(wname))
        consts += [(wname + "_q", q), (wname + "_s16", scale)]
        front += [helper.make_node("Cast", [wname + "_s16"], [wname + "_s"], to=onnx.TensorProto.FLOAT),
                  helper.make_node("DequantizeLinear", [wname + "_q", wname + "_s"], [wname], axis=axis)]
        done.add(wname)
        if len(node.input) > 2 and node.input[2] in inits:  # the bias (BatchNorm's shift folded in)
            bname = node.input[2]
            t = inits.pop(bname)
            b = numpy_helper.to_array(t).astype(np.float16)
            graph.initializer.remove(t)
            consts.append((bname + "_16", b))
            front.append(helper.make_node("Cast", [bname + "_16"], [bname], to=onnx.TensorProto.FLOAT))
    graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in consts)
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    _compact(graph)
    _short_names(proto)
    return proto


# attribute values that ONNX defines as the default of these ops (Conv's kernel_shape is read from its weight)
_DEFAULTS = {"dilations": lambda v: all(x == 1 for x in v), "strides": lambda v: all(x == 1 for x in v),
             "pads": lambda v: all(x == 0 for x in v), "group": lambda v: v == 1, "ceil_mode": lambda v: v == 0,
             "storage_order": lambda v: v == 0, "alpha": lambda v: v == 1.0, "beta": lambda v: v == 1.0,
             "transA": lambda v: v == 0, "transB": lambda v: v == 0}


def _compact(graph) -> None:
    """Drop what an ONNX file says twice, without changing what it computes: Conv / MaxPool / Gemm attributes
    equal to their defaults, Conv's ``kernel_shape`` (the weight's shape gives it), and repeated equal
    ``Constant`` nodes (each ReLU6 got its own 0 and 6): the first one stays and feeds every consumer.
    About 2 KB, a tenth of a 20,000-parameter net's file."""
    from onnx import helper

    for node in graph.node:
        if node.op_type not in ("Conv", "MaxPool", "Gemm"):
            continue
        keep = [a for a in node.attribute
                if not (a.name in _DEFAULTS and _DEFAULTS[a.name](helper.get_attribute_value(a)))
                and not (node.op_type == "Conv" and a.name == "kernel_shape")]
        del node.attribute[:]
        node.attribute.extend(keep)
    first: dict[bytes, str] = {}
    alias: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        node.input[:] = [alias.get(n, n) for n in node.input]
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            key = node.attribute[0].t.SerializeToString()
            if key in first:
                alias[node.output[0]] = first[key]
                continue
            first[key] = node.output[0]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _short_names(proto) -> None:
    """Rename every tensor but the graph's input and output to a base-36 counter; drop names and docs."""
    graph = proto.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in new:
            n, s = len(new), ""
            while True:
                n, r = divmod(n, 36)
                s = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + s
                if n == 0:
                    break
            new[name] = s
        return new[name]

    # ClearField, not = "": ONNX is proto2, where an empty string that was set is still written
    for t in graph.initializer:
        t.name = short(t.name)
        t.ClearField("doc_string")
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        node.ClearField("name")
        node.ClearField("doc_string")
        for a in node.attribute:
            a.ClearField("doc_string")
    del graph.value_info[:]
    graph.ClearField("doc_string")
    graph.name = "g"
    proto.ClearField("doc_string")


def save_int8(ckpt: dict[str, Any], calib_images_float: torch.Tensor, path: str | os.PathLike) -> int:
    """``export_int8`` of a checkpoint's model, carrying its meta; returns bytes on disk."""
    export_int8(model_from_checkpoint(ckpt), calib_images_float, path, meta=artifact_meta(ckpt))
    return os.path.getsize(path)


def save_int8w(ckpt: dict[str, Any], path: str | os.PathLike) -> int:
    """Write the weight-only int8 ONNX artifact of a checkpoint dict atomically; returns bytes on disk.

    Args:
        ckpt: a checkpoint dict; its ``data["image_size"]`` fixes the exported input size.
        path: destination ``.onnx`` file.
    """
    import onnx

    meta = artifact_meta(ckpt)
    size = int(meta["data"]["image_size"])
    with tempfile.TemporaryDirectory(prefix="shrink-int8w-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model_from_checkpoint(ckpt), torch.zeros(1, 3, size, size), fp32)
        proto = weight_only_int8(onnx.load(str(fp32)))
    _save_onnx(proto, path, {**meta, "kind": "int8w"})
    return os.path.getsize(path)


# ---------------------------------------------------------------- reading artifacts

def read_pt(path: str | os.PathLike) -> dict[str, Any]:
    """A ``.pt`` artifact's dict (``weights_only=True``), or a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model artifact not found: {path}")
    obj = safe_torch_load(path)  # ArtifactError (a ValueError) naming the file: missing, corrupt or unsafe
    if not isinstance(obj, dict) or not ("state_dict" in obj or obj.get("format") == UINT8_FORMAT):
        raise ValueError(f"{path}: not a model artifact (no state_dict and not a {UINT8_FORMAT} file)")
    return obj


def pt_kind(obj: dict[str, Any]) -> str:
    """The kind of a ``read_pt`` dict: the name in its ``"format": "shrink-<kind>"`` (fp16, uint8, or any
    format registered in ``shrink.formats``), else ``fp16`` when its weights are half precision, else ``fp32``."""
    fmt = obj.get("format")
    if isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX):
        return fmt.removeprefix(FORMAT_PREFIX)
    if any(v.dtype == torch.float16 for v in obj["state_dict"].values()):
        return "fp16"
    return "fp32"


def torch_model(obj: dict[str, Any]) -> nn.Module:
    """The float32 eval-mode network of a ``read_pt`` dict (uint8 dequantized, fp16 widened)."""
    if obj.get("format") == UINT8_FORMAT:
        if obj.get("version") != 1:
            raise ValueError(f"uint8 artifact version {obj.get('version')!r} is not supported (expected 1)")
        obj = {**artifact_meta(obj), "state_dict": dequantize_state_dict(obj)}
    model = model_from_checkpoint(obj)  # load_state_dict copies fp16 into the float32 parameters
    return model.float().eval()


def onnx_meta(proto) -> dict[str, Any]:
    """The shrink meta an ONNX model carries (``metadata_props["shrink"]``), or ``{}``."""
    return next((json.loads(p.value) for p in proto.metadata_props if p.key == ONNX_META_KEY), {})


def onnx_kind(proto) -> str:
    """The ``kind`` of its meta (written by every writer here), else from the graph: ``int8`` (activations
    quantized), ``int8w`` (weights only) or ``fp32``."""
    kind = onnx_meta(proto).get("kind")
    if isinstance(kind, str):
        return kind
    ops = {n.op_type for n in proto.graph.node}
    return "int8" if "QuantizeLinear" in ops else "int8w" if "DequantizeLinear" in ops else "fp32"


def read_artifact(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """(kind, contents) of an artifact: for ``.onnx`` files their meta (``onnx_meta``), for ``.pt`` files
    their ``read_pt`` dict. The kind is ``fp32`` or a format's name (``pt_kind``, ``onnx_kind``)."""
    if Path(path).suffix.lower() == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf errors: not an ONNX file
            raise ValueError(f"{path}: not a loadable ONNX model ({e})") from e
        return onnx_kind(proto), onnx_meta(proto)
    obj = read_pt(path)
    return pt_kind(obj), obj


def artifact_kind(path: str | os.PathLike) -> str:
    """``fp32`` or a format's name; ``.onnx`` files by their meta (or graph), ``.pt`` files by their content."""
    return read_artifact(path)[0]
