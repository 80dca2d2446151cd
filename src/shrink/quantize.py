"""Quantization: the course's 8-bit weight file, fp16, and real int8 inference with ONNX Runtime.

Artifacts (all self-contained; each carries ``model``, ``model_kwargs``, ``num_classes`` and the data
meta ``{classes, mean, std, image_size}``, so ``load_artifact`` / ``shrink predict`` need nothing else):

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

  Why flat buffers: ``torch.save`` stores every tensor as its own zip entry (64-byte aligned, with
  local and central headers), about 150-200 bytes each. Measured on the default
  ``StudentNet(num_classes=11)`` (256,779 params, 72 state_dict tensors): fp32 state_dict 1,057,611 B;
  fp16 state_dict 538,635 B; uint8 as a dict of ``{q, min, max}`` tensors per entry 312,367 B (over the
  300,000 B limit), with Python-float min/max 281,803 B; flat buffers 264,225 B. The legacy
  non-zip format (``_use_new_zipfile_serialization=False``) would save another ~1.5 kB but cannot be
  memory-mapped and is on its way out, so the default zip format is used. With the data meta and this
  project's full params (~2.4 kB pickled) the file is 267,067 B (course: 268,472 B); fp16 542,003 B
  (course: 522,958 B); the fp32 checkpoint 1,057,153 B.

* **fp16** (``save_fp16``): the checkpoint with floating state_dict tensors in half precision.

* **int8 ONNX** (``export_int8`` / ``save_int8``), for *inference*: the float model exported with the
  TorchScript-based exporter (``dynamo=False``, opset 17, input ``"input"`` with a dynamic batch axis,
  output ``"logits"``; eval-mode export folds BatchNorm into the convolutions), pre-processed with
  ``quant_pre_process`` and statically quantized with ``onnxruntime.quantization.quantize_static``:
  QDQ format, per-channel int8 weights, uint8 activations (U8S8, the fast path on x86), MinMax
  calibration on normalised training images. The artifact meta (same keys as above, JSON) is stored in
  the model's ``metadata_props`` under ``"shrink"``; no sidecar file. ``Int8Model`` runs it.

Int8 measurements (``python -m shrink.quantize bench CKPT PREPARED``): a 2-epoch StudentNet
(256,779 params) on Fashion-MNIST, 28x28 input, normalised float input, 2 threads everywhere
(``torch.set_num_threads(2)``, ORT ``intra_op_num_threads=2``), 512 calibration images. Machine: 2
vCPUs (x86, AVX-512 VNNI) that other jobs were loading to 3-6 runnable threads while measuring, so each
runner ran in its own process, interleaved round by round with the others (40 rounds x 10 calls after
warm-up): "min" approximates the unloaded latency, "median" is under that load::

    runner                        batch 64 min / median   batch 1 min / median   test acc (10k)
    PyTorch fp32 eager              10.95 / 108.96 ms       1.028 / 1.577 ms     0.8537
    PyTorch x86 int8 (FX)            1.88 /  14.98 ms       0.630 / 0.861 ms     0.8534
    ONNX Runtime fp32                1.54 /   2.09 ms       0.065 / 0.069 ms     0.8537
    ONNX Runtime int8 QDQ            2.53 /   3.21 ms       0.080 / 0.086 ms     0.8530
    ONNX Runtime int8 QOperator      2.47 /   3.18 ms       0.078 / 0.127 ms     0.8530
    (uint8 min-max, dequantized to fp32: 0.8520; fp16: 0.8537)

Choice: **ONNX Runtime int8, QDQ, per-channel**. Against fp32 PyTorch eager at batch 64 it is 4.3x faster
unloaded and ~34x under load, for -0.07 points of accuracy (99% argmax agreement), meeting the target
(>= 2x, <= 1 point). Per-tensor weights cost -0.4 points at the same speed. Against PyTorch's own int8
(FX graph mode, x86 backend): that is slightly faster unloaded at batch 64 (1.9 vs 2.5 ms) but 8x slower
at batch 1 and 5x slower under load (PyTorch's OpenMP threads degrade badly on a busy machine), its
model cannot be saved as a ``weights_only`` file (it must be re-calibrated on load), and in torch
2.14.1 ``torch.ao.quantization`` warns it is deprecated ("will be removed", move to torchao), as are
quantized tensors. QDQ and QOperator run the same kernels after ORT's graph optimisation (equal speed
within noise, equal accuracy); QDQ is ORT's recommended format (QOperator's file is smaller: ~290 kB
vs ~323 kB). The TorchScript exporter (``dynamo=False``) warns that it is deprecated; the
``dynamo=True`` exporter was checked to give the same graph (opset 18, ReduceMean for the pooling).

Worth knowing: at 28x28 ONNX Runtime's *fp32* model is faster than its int8 one. The whole net is
~0.9 M multiply-adds per image; int8 gains nothing on the 3-channel stem convolution (its int8 kernel
took ~4x the fp32 NCHWc one in ORT's profile) and adds layout transposes. Excluding the stem from
quantization, S8S8 activations, or leaving the 1x1 average pool in float changed little (2.5-3.4 ms
min). At 128x128 (batch 16) int8 and fp32 ORT tie (11.4 vs 11.2 ms min). Most of the speed-up over
eager comes from ONNX Runtime itself (BatchNorm folded, ReLU6 fused, blocked layouts); int8 keeps it
while making the weights 4x smaller.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .checkpoint import safe_torch_load, model_from_checkpoint
from .io import atomic_path, save_torch

UINT8_FORMAT = "shrink-uint8"
FP16_FORMAT = "shrink-fp16"
ONNX_META_KEY = "shrink"
ARTIFACT_KINDS = ("uint8", "fp16", "fp32", "int8-onnx")
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


def load_fp16(path: str | os.PathLike) -> nn.Module:
    """A float32 model from an fp16 checkpoint file (the same as ``load_artifact(path)[0]``)."""
    return load_artifact(path)[0]


# ---------------------------------------------------------------- int8 ONNX Runtime

def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings say nothing about this model
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=17, do_constant_folding=True,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def export_int8(
    model: nn.Module,
    calib_images_float: torch.Tensor,
    path: str | os.PathLike,
    *,
    meta: dict[str, Any] | None = None,
    batch_size: int = 64,
    quant_format: str = "QDQ",
) -> None:
    """Export ``model`` to a statically quantized int8 ONNX file (QDQ, per-channel weights), atomically.

    Args:
        model: the float network (copied to the CPU in eval mode; the original is left alone).
        calib_images_float: normalised float32 (N, 3, H, W) images for calibration (a few hundred train
            images); H, W fix the exported spatial size, the batch axis stays dynamic.
        path: destination ``.onnx`` file.
        meta: ``artifact_meta(ckpt)``, stored as JSON in the model's ``metadata_props["shrink"]``.
        batch_size: calibration batch size.
        quant_format: ``"QDQ"`` (the pipeline's) or ``"QOperator"``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = calib_images_float.detach().float().cpu()
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"calibration images must be a non-empty (N, C, H, W) float tensor, got {tuple(x.shape)}")
    model = copy.deepcopy(model).cpu().float().eval()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(x), batch_size))

        def get_next(self) -> dict | None:
            start = next(self.batches, None)
            return None if start is None else {"input": x[start : start + batch_size].numpy()}

    with tempfile.TemporaryDirectory(prefix="shrink-int8-") as tmp:
        fp32, pre, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        _export_onnx(model, x[:1], fp32)
        quant_pre_process(str(fp32), str(pre))  # shape inference + graph clean-up, as ORT recommends
        quantize_static(
            str(pre), str(int8), Reader(), quant_format=QuantFormat[quant_format], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(int8))
    if meta is not None:
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    with atomic_path(path) as tmp_path:
        onnx.save(proto, str(tmp_path))


def save_int8(ckpt: dict[str, Any], calib_images_float: torch.Tensor, path: str | os.PathLike) -> int:
    """``export_int8`` of a checkpoint's model, carrying its meta; returns bytes on disk."""
    export_int8(model_from_checkpoint(ckpt), calib_images_float, path, meta=artifact_meta(ckpt))
    return os.path.getsize(path)


class Int8Model:
    """An ONNX model run by ONNX Runtime on the CPU: ``model(x)`` maps float NCHW to logits.

    Spinning of ORT's worker threads is off: on a small, shared machine (and next to PyTorch's own
    OpenMP threads in the same process) spinning threads starve the ones doing work. Measured on the
    2-vCPU VM under load, batch 64: median 3.2 ms without spinning vs 10.6 ms with it (same min).

    Args:
        path: the ``.onnx`` file (input ``"input"``).
        threads: intra-op threads.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 2) -> None:
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

    def eval(self) -> "Int8Model":  # so callers may treat it like an nn.Module in eval mode
        return self


def quantize_torch_x86(model: nn.Module, calib_images_float: torch.Tensor) -> nn.Module:
    """PyTorch's own int8 path (FX graph mode, x86 backend), kept to reproduce the comparison above.

    The pipeline does not use it: ``torch.ao.quantization`` warns it is deprecated (to be replaced by
    torchao) and its model cannot be saved as a plain ``weights_only`` file.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).cpu().eval(), get_default_qconfig_mapping("x86"),
                              example_inputs=(calib_images_float[:1],))
        with torch.no_grad():
            for start in range(0, len(calib_images_float), 64):
                prepared(calib_images_float[start : start + 64])
        return convert_fx(prepared)


# ---------------------------------------------------------------- generic loading

def _load_pt(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model artifact not found: {path}")
    obj = safe_torch_load(path)  # ArtifactError (a ValueError) naming the file: missing, corrupt or unsafe
    if not isinstance(obj, dict) or not ("state_dict" in obj or obj.get("format") == UINT8_FORMAT):
        raise ValueError(f"{path}: not a model artifact (no state_dict and not a {UINT8_FORMAT} file)")
    return obj


def _kind_of(obj: dict[str, Any]) -> str:
    if obj.get("format") == UINT8_FORMAT:
        return "uint8"
    if obj.get("format") == FP16_FORMAT or any(v.dtype == torch.float16 for v in obj["state_dict"].values()):
        return "fp16"
    return "fp32"


def _torch_model(obj: dict[str, Any]) -> nn.Module:
    if obj.get("format") == UINT8_FORMAT:
        if obj.get("version") != 1:
            raise ValueError(f"uint8 artifact version {obj.get('version')!r} is not supported (expected 1)")
        obj = {**artifact_meta(obj), "state_dict": dequantize_state_dict(obj)}
    model = model_from_checkpoint(obj)  # load_state_dict copies fp16 into the float32 parameters
    return model.float().eval()


def artifact_kind(path: str | os.PathLike) -> str:
    """One of ``ARTIFACT_KINDS``: ``.onnx`` files are ``"int8-onnx"``; ``.pt`` files are inspected."""
    if Path(path).suffix.lower() == ".onnx":
        return "int8-onnx"
    return _kind_of(_load_pt(path))


def load_artifact(path: str | os.PathLike, threads: int = 2) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """Load any model artifact for inference: ``(model, meta)``.

    ``model(x)`` maps normalised float32 (N, 3, S, S) to logits (a float32 ``nn.Module`` in eval mode, or
    an ``Int8Model``); ``meta`` has ``model``, ``model_kwargs``, ``num_classes``, ``data`` and ``kind``.

    Args:
        path: a uint8 / fp16 / fp32 ``.pt`` checkpoint or an int8 ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (torch models use torch's setting).
    """
    if Path(path).suffix.lower() == ".onnx":
        model = Int8Model(path, threads=threads)
        if not model.meta:
            raise ValueError(f"{path}: ONNX model has no '{ONNX_META_KEY}' metadata (classes, normalisation)")
        return model, {**model.meta, "kind": "int8-onnx"}
    obj = _load_pt(path)
    return _torch_model(obj), {**artifact_meta(obj), "kind": _kind_of(obj)}


def _latency_ms(fn: Callable[[], Any], warmup: int = 10, repeats: int = 50) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


# ---------------------------------------------------------------- benchmark (python -m shrink.quantize bench)

def _bench_model(spec: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.set_num_threads(spec["threads"])
    if spec["kind"] == "onnx":
        return Int8Model(spec["path"], threads=spec["threads"])
    model = model_from_checkpoint(spec["path"])
    if spec["kind"] == "fx":
        model = quantize_torch_x86(model, torch.load(spec["calib"], weights_only=True))
    return model


def _bench_runner(spec: dict[str, Any]) -> Callable[[], Any]:
    model = _bench_model(spec)
    x = torch.load(spec["inputs"], weights_only=True)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def _bench_worker(conn, spec: dict[str, Any]) -> None:
    run = _bench_runner(spec)
    _latency_ms(run, warmup=10, repeats=0)
    conn.send("ready")
    while (n := conn.recv()) is not None:
        conn.send(_latency_ms(run, warmup=0, repeats=n))


def benchmark(specs: dict[str, dict[str, Any]], rounds: int = 30, calls: int = 10) -> dict[str, dict[str, float]]:
    """Latency of several runners, each in its own process, interleaved round by round.

    Interleaving makes load from other jobs on a shared machine hit every runner alike, and separate
    processes keep one runtime's idle threads from competing with another's.
    """
    import multiprocessing as mp
    import statistics

    ctx = mp.get_context("spawn")
    workers = {}
    for name, spec in specs.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_bench_worker, args=(child, spec), daemon=True)
        proc.start()
        workers[name] = (parent, proc)
    for parent, _ in workers.values():
        parent.recv()
    times: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(rounds):
        for name, (parent, _) in workers.items():
            parent.send(calls)
            times[name] += parent.recv()
    for parent, proc in workers.values():
        parent.send(None)
        proc.join()
    return {name: {"min_ms": min(t), "median_ms": statistics.median(t)} for name, t in times.items()}


def _bench_main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from .checkpoint import load_checkpoint
    from .data import load_split, normalizer

    ap = argparse.ArgumentParser(prog="python -m shrink.quantize bench",
                                 description="Compare fp32 and int8 CPU inference of a checkpoint.")
    ap.add_argument("checkpoint", help="fp32 checkpoint (.pt)")
    ap.add_argument("prepared", help="prepared data folder (calibration from train, accuracy on test)")
    ap.add_argument("--calib", type=int, default=512, help="calibration images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)

    ckpt = load_checkpoint(args.checkpoint)
    norm = normalizer(ckpt["data"])
    train, test = load_split(args.prepared, "train"), load_split(args.prepared, "test")
    pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))[: args.calib]
    calib = norm(train.images[pick])
    model = model_from_checkpoint(ckpt)
    with tempfile.TemporaryDirectory(prefix="shrink-bench-") as tmp:
        tmp = Path(tmp)
        torch.save(calib, tmp / "calib.pt")
        _export_onnx(model, calib[:1], tmp / "fp32.onnx")
        for fmt in ("QDQ", "QOperator"):
            export_int8(model, calib, tmp / f"int8_{fmt}.onnx", quant_format=fmt)
        runners = {
            "PyTorch fp32 eager": {"kind": "eager", "path": args.checkpoint},
            "PyTorch x86 int8 (FX)": {"kind": "fx", "path": args.checkpoint, "calib": str(tmp / "calib.pt")},
            "ONNX Runtime fp32": {"kind": "onnx", "path": str(tmp / "fp32.onnx")},
            "ONNX Runtime int8 QDQ": {"kind": "onnx", "path": str(tmp / "int8_QDQ.onnx")},
            "ONNX Runtime int8 QOperator": {"kind": "onnx", "path": str(tmp / "int8_QOperator.onnx")},
        }
        x_test, labels = norm(test.images), test.labels.long()
        acc = {}
        for name, spec in runners.items():
            fn = _bench_model({**spec, "threads": args.threads})
            with torch.inference_mode():
                logits = torch.cat([fn(x_test[i : i + 512]) for i in range(0, len(x_test), 512)])
            acc[name] = (logits.argmax(1) == labels).float().mean().item()
        results = {}
        for b in args.batches:
            torch.save(x_test[:b].clone(), tmp / f"x{b}.pt")
            specs = {n: {**s, "threads": args.threads, "inputs": str(tmp / f"x{b}.pt")} for n, s in runners.items()}
            results[b] = benchmark(specs, rounds=args.rounds, calls=10 if b > 8 else 50)
    for name in runners:
        cols = "   ".join(f"b{b} {results[b][name]['min_ms']:7.3f} / {results[b][name]['median_ms']:7.3f} ms" for b in args.batches)
        print(f"{name:30s} {cols}   acc {acc[name]:.4f}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["bench"]:
        raise SystemExit("usage: python -m shrink.quantize bench CHECKPOINT PREPARED [options]")
    _bench_main(sys.argv[2:])
