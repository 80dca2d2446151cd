"""One measurement layer: load any artifact into one runtime interface, and one interleaved timer.

``load_runtime(path)`` is the project's one artifact loader (evaluate, ``shrink bench`` and ``shrink predict``
use it). It reads the file's kind (``quantize.read_artifact``) and runs it where it runs best, saying so in
``Runtime.label``: an fp32 ``<model>.pt`` checkpoint in PyTorch eager fp32, an fp32 ``*.onnx`` export
(``export_onnx``) in ORT fp32, and an artifact of a quantization format as its entry in ``shrink.formats``
says (e.g. ``<model>.int8w.onnx`` in "ORT fp32 (int8 weights)", with ``session.disable_quant_qdq = 1``).

``interleaved(calls, ...)`` is the one timer: threads fixed, warm-up, then ``repeats`` samples of each
callable taken round-robin (the order rotates each round, so background load hits all alike and no
callable always follows the same other one); a sample times enough back-to-back calls to last
``min_time`` seconds. It reports min (the closest to an unloaded machine) and median (under the load
of the moment) per callable, the load average before and after, and a warning when other processes kept
the cores busy (measured at the start and end of the timing, not from the load average, which still
counts the pipeline's own training stages for a minute after they end).
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping

import torch

from .config import cores as config_cores
from .formats import OrtModel, get_format
from .quantize import ONNX_META_KEY, artifact_meta, export_onnx, read_artifact, read_pt, torch_model

# the fp32 rows' runtimes; a quantized artifact runs as its format says (formats.Format.label)
FP32_LABELS = {"torch": "PyTorch eager fp32", "ort": "ORT fp32"}


@dataclass
class Runtime:
    """A loaded artifact: ``runtime(x)`` maps normalised float32 (N, 3, S, S) to logits, without grad.

    Attributes:
        path: the file it came from.
        kind: ``fp32`` or a format's name (``formats.list_formats()``).
        label: which runtime runs it, e.g. ``"ORT fp32 (int8 weights)"``.
        meta: ``model``, ``model_kwargs``, ``num_classes``, ``data`` (classes, mean, std, image_size).
        bytes: the file's size on disk.
    """

    path: Path
    kind: str
    label: str
    meta: dict[str, Any]
    bytes: int
    model: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)


def load_runtime(path: str | os.PathLike, threads: int = 2) -> Runtime:
    """Load any model artifact for inference (the project's one loader).

    Args:
        path: an fp32 ``.pt`` checkpoint, an fp32 ``.onnx`` export, or any registered format's file
            (``shrink.formats``; its kind is read from the file, ``quantize.read_artifact``).
        threads: ONNX Runtime intra-op threads (PyTorch uses ``torch.set_num_threads``; ``interleaved``
            sets it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model artifact not found: {path}")
    kind, found = read_artifact(path)
    onnx = path.suffix.lower() == ".onnx"
    if onnx and not found:
        raise ValueError(f"{path}: ONNX model has no '{ONNX_META_KEY}' metadata (classes, normalisation)")
    meta = {k: v for k, v in found.items() if k != "kind"} if onnx else artifact_meta(found)
    if kind != "fp32":
        try:
            fmt = get_format(kind)
        except KeyError as e:
            raise ValueError(f"{path}: {e.args[0]}") from None
        return Runtime(path, kind, fmt.label, meta, path.stat().st_size, fmt.load(path, threads))
    model = OrtModel(path, threads=threads) if onnx else torch_model(found)
    return Runtime(path, kind, FP32_LABELS["ort" if onnx else "torch"], meta, path.stat().st_size, model)


def ort_fp32(checkpoint: str | os.PathLike, folder: str | os.PathLike, threads: int = 2) -> Runtime:
    """The fp32 checkpoint exported to ONNX (``folder/<stem>.fp32.onnx``) and run by ORT fp32: what changing
    runtime alone buys, the reference every compression step is compared with."""
    obj = read_pt(checkpoint)
    meta = artifact_meta(obj)
    size = int(meta["data"]["image_size"])
    out = Path(folder) / f"{Path(checkpoint).stem}.fp32.onnx"
    export_onnx(torch_model(obj), torch.zeros(1, 3, size, size), out, meta={**meta, "kind": "fp32"})
    return load_runtime(out, threads=threads)


# ---------------------------------------------------------------- the timer

def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def others_busy(seconds: float = 0.5) -> float | None:
    """Cores kept busy by OTHER processes right now: the CPU time all processes used over ``seconds``
    (``/proc/stat``) minus this process's own, per second of wall time, scaled to the cores this process
    may use. None where ``/proc/stat`` is missing.

    Why not the load average: it decays over a minute, so right after the pipeline's own training stages
    it still reads ~2 on an otherwise idle 2-core machine, and evaluate warned about a busy machine that
    was not."""
    def busy_ticks() -> tuple[int, int]:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        v = [int(x) for x in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        return sum(v) - v[3] - v[4], max(cpus, 1)

    try:
        hz = os.sysconf("SC_CLK_TCK")
        (b0, cpus), c0, t0 = busy_ticks(), time.process_time(), time.perf_counter()
        time.sleep(seconds)
        (b1, _), c1, t1 = busy_ticks(), time.process_time(), time.perf_counter()
    except (OSError, ValueError, IndexError):
        return None
    others = max(0.0, (b1 - b0) / hz - (c1 - c0)) / (t1 - t0)  # cores' worth, over all the machine's CPUs
    return round(others * min(1.0, config_cores() / cpus), 2)


def busy_warnings(threads: int, load: float | None = None, cores: int | None = None) -> list[str]:
    """A warning when other processes already keep the cores busy: with every core taken, a thread of a
    multi-threaded kernel gets preempted and the others wait for it at each barrier (PyTorch's OpenMP pool
    suffers much more than ONNX Runtime's), so multi-threaded ratios are distorted, not just noisy.

    Args:
        load: cores busy with other work (default: ``others_busy()``, or the load average without /proc).
    """
    if threads <= 1:
        return []
    if load is None:
        load = others_busy()
        if load is None:
            load = load_average()
        if load is None:
            return []
    cores = config_cores() if cores is None else cores
    if load + threads > cores + 0.5:
        return [f"the machine was busy (other processes kept {load:.2f} of {cores} cores busy) and the timings use "
                f"{threads} threads: PyTorch's multi-threaded figures can be several times too slow; "
                f"rerun on a quiet machine, or with 1 thread for a fair comparison on a busy one."]
    return []


@dataclass
class Timing:
    """What ``interleaved`` measured: seconds per call, per key, plus the machine's state."""

    times: dict[Any, list[float]]
    threads: int
    repeats: int
    load_before: float | None
    load_after: float | None
    warnings: list[str]

    def min_ms(self, key: Hashable) -> float:
        return min(self.times[key]) * 1e3

    def median_ms(self, key: Hashable) -> float:
        return statistics.median(self.times[key]) * 1e3

    def setup(self) -> dict[str, Any]:
        return {"threads": self.threads, "repeats": self.repeats, "load_before": self.load_before,
                "load_after": self.load_after, "warnings": self.warnings}


def interleaved(calls: Mapping[Hashable, Callable[[], Any]], repeats: int, *, threads: int, warmup: int = 3,
                min_time: float = 0.0, progress: Callable[[int], None] | None = None) -> Timing:
    """Time each callable: ``warmup`` untimed calls, then ``repeats`` samples each, round-robin.

    Args:
        calls: key -> a callable doing one unit of work (e.g. a forward pass of one batch).
        repeats: samples per callable (>= 1).
        threads: ``torch.set_num_threads`` for the whole measurement (ORT sessions fix theirs at load).
        warmup: untimed calls of each callable first.
        min_time: a sample repeats its call until it lasts about this long (0: one call per sample).
        progress: called with the round number after each round (e.g. a progress bar's update).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(threads)
    load_before = load_average()
    warnings = busy_warnings(threads)
    inner = {}
    for key, call in calls.items():
        for _ in range(warmup):
            call()
        n = 1
        if min_time > 0:
            t0 = time.perf_counter()
            call()
            n = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-6)))
        inner[key] = n
    keys = list(calls)
    times: dict[Any, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        shift = r % len(keys) if keys else 0
        for key in keys[shift:] + keys[:shift]:
            call, n = calls[key], inner[key]
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            times[key].append((time.perf_counter() - t0) / n)
        if progress is not None:
            progress(r + 1)
    load_after = load_average()
    if not warnings:
        warnings = busy_warnings(threads)
    return Timing(times, threads, repeats, load_before, load_after, warnings)

