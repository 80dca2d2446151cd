"""Benchmark: what the pipeline buys, as ratios of things measured in the same run.

``python -m shrink.bench`` (or ``shrink bench``, ``make bench``) prints its figures and writes
``bench/results.json`` and ``bench/results.md``. The machine is shared and noisy, so every speed
figure is a ratio of two measurements taken side by side in one run, never an absolute time
compared with another run's.

Sections:

1. compression: bytes of the teacher (fp32) against the shipped artifact (the one the evaluate stage
   chose, from ``metrics/evaluate.json``), the shipped bytes against the course's uint8 file of the
   same network, and each model's test accuracy minus the teacher's.
2. latency: CPU inference at batch 1 and 64 through the one measurement layer (``shrink.runtime``:
   one loader, one interleaved timer; min and median): each fp32 model in PyTorch eager and in ORT
   fp32, and the final model's artifacts; ratios against the teacher and against the unpruned student
   in ORT fp32 (``distill.ort``). Nothing here is imported by a stage: editing it reruns nothing.
3. data path: images/s of the pipeline's training loop over prepared tensors against the course's
   PIL-per-item loader over the same images, same model and batch size.
4. pipeline cost: wall time of a full ``dvc repro`` from an empty cache in a fresh copy of the
   project, of a no-op ``dvc repro`` and of the rerun after changing one late pruning round.
5. the machine: CPU, cores, library versions, date.

``--quick`` runs all of it on a copy of the project with tiny params (seconds to a few minutes).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import yaml
from tqdm import tqdm

from .runtime import busy_warnings, interleaved

# What a copy of the project needs to run its pipeline (as tests/conftest.make_project copies).
PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "src", "weights", ".dvcignore")
FP32_MODELS = ("teacher", "student", "distill")  # then the pruning rounds, in params order
BATCHES = (1, 64)

REF = "distill.ort"  # the unpruned student exported to ONNX and run by ORT fp32: the latency reference

# The targets the pipeline is held to: (key, label, op, goal). Speed ratios are of min latencies measured
# side by side in one run (the min is the least disturbed by other jobs on a shared machine).
TARGETS = {
    "size": ("shipped artifact is smaller than the teacher (fp32)", ">=", 150.0),
    "shipped_bytes": ("shipped artifact bytes", "<=", 300_000),
    "shipped_vs_uint8": ("shipped artifact bytes / the course uint8 file of the same network", "<=", 1.1),
    "shipped_b1": (f"shipped artifact speed vs the unpruned student in ORT fp32 ({REF}), batch 1", ">=", 1.0),
    "shipped_b64": (f"shipped artifact speed vs the unpruned student in ORT fp32 ({REF}), batch 64", ">=", 1.0),
    "pruned_b64": (f"final pruning round in ORT fp32 vs {REF}, batch 64", ">=", 1.1),
    "accuracy": ("shipped artifact's test accuracy loss vs its fp32 parent (points)", "<=", 0.5),
    "data_path": ("training loop over prepared tensors vs the course's PIL loader (images/s)", ">=", 3.0),
    "late_rerun": ("rerun after changing the last pruning round, fraction of a full run", "<=", 0.25),
}


# ============================================================== pure helpers


def median(values: Iterable[float]) -> float:
    """Median of a non-empty sequence of numbers."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or ``den`` is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


@dataclass(frozen=True)
class TargetCheck:
    """One target against its measured value."""

    key: str
    label: str
    op: str  # ">=" or "<="
    goal: float
    value: float | None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.op == ">=" else self.value <= self.goal

    @property
    def shortfall(self) -> float | None:
        """How far off a missed target is, as a factor > 1 (None when met or not measured)."""
        if self.met is not False:
            return None
        if self.op == ">=":
            return math.inf if self.value <= 0 else self.goal / self.value
        return math.inf if self.goal <= 0 else self.value / self.goal

    def as_dict(self) -> dict[str, Any]:
        short = self.shortfall
        return {"key": self.key, "label": self.label, "op": self.op, "goal": self.goal, "value": self.value,
                "met": self.met, "shortfall": None if short is None or math.isinf(short) else short}


def check_target(key: str, value: float | None) -> TargetCheck:
    label, op, goal = TARGETS[key]
    return TargetCheck(key, label, op, goal, value)


def tiny_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Shrink the default params to a pipeline run of seconds: a few hundred 16 px images, one epoch,
    three pruning rounds, one process per stage. The tests' tiny projects use this same function."""
    params["data"]["limit"] = 300
    params["data"]["image_size"] = 16
    for name in ("teacher", "student", "distill"):  # one process: torchrun's start-up would dominate
        params[name]["train"].update(epochs=1, batch_size=64, nproc=1)
    if "prune" in params:
        rounds = params["prune"]["rounds"]
        kept = dict(list(rounds.items())[:3])
        for r in kept.values():
            r["epochs"] = 1
        params["prune"]["rounds"] = kept
        params["prune"]["finetune"]["train"].update(batch_size=64, nproc=1)
        if isinstance(params.get("quantize"), dict) and "models" in params["quantize"]:
            params["quantize"]["models"] = ["distill", list(kept)[-1]]  # the last round that remains
    for key, section in (("quantize", {"calibration_images": 64}), ("evaluate", {"repeats": 5, "warmup": 1})):
        if isinstance(params.get(key), dict):
            params[key].update({k: v for k, v in section.items() if k in params[key]})
    return params


def bump_last_round(params: dict[str, Any]) -> str:
    """Add one fine-tuning epoch to the last pruning round; returns a description of the change."""
    rounds = params["prune"]["rounds"]
    last = list(rounds)[-1]
    before = int(rounds[last]["epochs"])
    rounds[last]["epochs"] = before + 1
    return f"prune.rounds.{last}.epochs {before} -> {before + 1}"


def write_food11_folder(images: torch.Tensor, labels: torch.Tensor, root: str | Path, val: int = 0) -> list[Path]:
    """Write uint8 (N, 3, S, S) images as a Food-11 folder: ``training/<label>_<i>.jpg``.

    The first ``val`` images are also written to ``validation/`` (``prepare`` wants that folder).
    Returns the training files, in the order of ``images``.

    Args:
        images: uint8 images (N, 3, S, S).
        labels: int labels (N,).
        root: the folder to create (``training/`` and ``validation/`` inside).
        val: how many images to write to ``validation/`` as well.
    """
    from PIL import Image

    root = Path(root)
    files = []
    for split, count in (("training", len(labels)), ("validation", min(val, len(labels)))):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            arr = images[i].permute(1, 2, 0).contiguous().numpy()
            path = folder / f"{int(labels[i])}_{i}.jpg"
            Image.fromarray(arr, "RGB").save(path, quality=95)
            if split == "training":
                files.append(path)
    return files


def food11_label(path: str | Path) -> int:
    """The label of a Food-11 file ``<label>_<id>.jpg``."""
    m = re.match(r"^(\d+)_", Path(path).name)
    if not m:
        raise ValueError(f"{path}: not a Food-11 file name (<label>_<id>.jpg)")
    return int(m.group(1))


def stages_ran(dvc_output: str) -> list[str]:
    """Names of the stages a ``dvc repro`` output says it ran."""
    return re.findall(r"Running stage '([^']+)'", dvc_output)


# -------------------------------------------------------------- the markdown report


def _fmt(x: Any, spec: str = ".3g", none: str = "—") -> str:
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return format(x, spec)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _target_value(t: Mapping[str, Any]) -> str:
    v = t["value"]
    if v is None:
        return "not measured"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if t["op"] == "<=" else f"{v:.3g}x"


def _target_verdict(t: Mapping[str, Any]) -> str:
    if t["met"] is None:
        return "—"
    if t["met"]:
        return "**met**"
    short = t["shortfall"]
    if short is None:
        return "**missed**"
    if t["op"] == ">=":
        return f"**missed**: needs {_fmt(short, '.2f')}x more"
    return f"**missed**: {_fmt(short, '.2f')}x over"


def render_markdown(results: Mapping[str, Any]) -> str:
    """The results as a markdown page: targets first, then one table per section."""
    out = [f"# Benchmark ({results.get('mode', '?')} mode)", ""]
    m = results.get("machine") or {}
    if m:
        out += [f"{m.get('date', '')} on {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores "
                f"({m.get('affinity', '?')} usable), {results.get('threads', '?')} threads; "
                f"load average {m.get('load_before', '?')} before, {m.get('load_after', '?')} after.", ""]
    for w in results.get("warnings", []):
        out += [f"> **Warning:** {w}", ""]
    out += ["Speed figures are ratios of measurements taken side by side in this run (the machine is shared); "
            "absolute times are for reference only.", ""]

    out += ["## Targets", "", "| target | measured | goal | verdict |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        goal = f"{t['op']} {t['goal']:,}" + ("x" if t["op"] == ">=" else "")
        out.append(f"| {t['label']} | {_target_value(t)} | {goal} | {_target_verdict(t)} |")
    out.append("")

    c = results.get("compression")
    if c:
        out += ["## 1. Compression", "",
                f"Teacher fp32: {_fmt_bytes(c.get('teacher_bytes'))}; shipped artifact `{c.get('shipped')}`: "
                f"{_fmt_bytes(c.get('shipped_bytes'))}, **{_fmt(c.get('size_ratio'), '.1f')}x smaller**; "
                f"{_fmt(c.get('shipped_vs_uint8'), '.3f')}x the course's uint8 file of the same network "
                f"({_fmt_bytes(c.get('uint8_bytes'))}). Chosen by the evaluate stage: {c.get('shipped_rule', '?')}. "
                f"Source: {c.get('source', '?')}.", "",
                "| model | runtime | params | bytes | x smaller than teacher | test acc | acc − teacher (points) |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for r in c.get("rows", []):
            acc = r.get("test_acc")
            delta = r.get("acc_vs_teacher")
            out.append(f"| {r['model']} | {r.get('runtime') or '—'} | {_fmt(r.get('params'), ',')} | {_fmt_bytes(r.get('bytes'))} | "
                       f"{_fmt(r.get('x_smaller'), '.1f')} | {_fmt(acc, '.4f')} | "
                       f"{_fmt(None if delta is None else 100 * delta, '+.2f')} |")
        out.append("")

    lat = results.get("latency")
    if lat:
        out += ["## 2. Inference latency (CPU)", "",
                f"{lat.get('repeats')} interleaved samples per model (shrink.runtime.interleaved), "
                f"{lat.get('threads')} thread(s), {lat.get('image_size')} px inputs, warm-up excluded; load average "
                f"{lat.get('load_before', '?')} before, {lat.get('load_after', '?')} after. Times: min / median. "
                f"Speed-up = the reference's min time / the model's; `{lat.get('reference', REF)}` is the unpruned "
                f"student exported to ONNX and run by ORT fp32.",
                "", f"| model | runtime | batch 1 (ms) | batch 64 (ms) | vs teacher b1 | vs teacher b64 | "
                    f"vs {lat.get('reference', REF)} b1 | vs {lat.get('reference', REF)} b64 |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in lat.get("models", []):
            b = r["batch"]
            cells = [f"{_fmt(b.get(str(k), {}).get('min_ms'), '.3g')} / {_fmt(b.get(str(k), {}).get('median_ms'), '.3g')}"
                     for k in BATCHES]
            for ref in ("vs_teacher", "vs_ref"):
                cells += [_fmt(b.get(str(k), {}).get(ref), ".2f") + ("x" if b.get(str(k), {}).get(ref) else "")
                          for k in BATCHES]
            out.append(f"| {r['name']} | {r['runtime']} | " + " | ".join(cells) + " |")
        out.append("")

    d = results.get("data_path")
    if d:
        out += ["## 3. Training data path", "",
                f"{d.get('images')} images, batch {d.get('batch_size')}, the same StudentNet, AdamW step included, "
                f"median of {d.get('repeats')} interleaved passes. {d.get('note', '')}", "",
                "| loader | images/s | pipeline is faster by |", "|---|---:|---:|"]
        for r in d.get("rows", []):
            out.append(f"| {r['loader']} | {_fmt(r.get('images_per_s'), '.0f')} | "
                       f"{_fmt(r.get('pipeline_speedup'), '.2f')}{'x' if r.get('pipeline_speedup') else ''} |")
        out.append("")

    p = results.get("pipeline")
    if p and p.get("error"):
        out += ["## 4. Pipeline cost", "", f"Not measured: {p['error']}", ""]
    elif p:
        out += ["## 4. Pipeline cost", "", f"A fresh copy of the project ({p.get('params', '?')} params), empty DVC "
                f"cache. Changed for the rerun: `{p.get('change')}`.", "",
                "| run | wall time (s) | fraction of the full run | stages run |", "|---|---:|---:|---|"]
        for r in p.get("runs", []):
            out.append(f"| {r['run']} | {_fmt(r.get('seconds'), '.1f')} | {_fmt(r.get('fraction'), '.3f')} | "
                       f"{', '.join(r.get('stages', [])) or 'none'} |")
        out.append("")

    if m:
        out += ["## 5. Machine", "", "| | |", "|---|---|"]
        for k in ("cpu", "cpu_count", "affinity", "python", "torch", "onnxruntime", "dvc", "platform", "date",
                  "project_commit"):
            if k in m:
                out.append(f"| {k} | {m[k]} |")
        out.append("")
    return "\n".join(out)


# ============================================================== 5. the machine


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": _load(),
    }
    for mod in ("onnxruntime", "dvc"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # a version is nice to have, never a reason to fail
            info[mod] = None
    return info


def _load() -> str | None:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return None


def _git_commit(project: Path) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty.strip() else "")


# ============================================================== project copies and dvc runs


def _env(project: Path) -> dict[str, str]:
    """The environment a project copy's stages run in: this venv's python and dvc, the copy's own src."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(project / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env or _env(cwd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _git(cwd: Path, *args: str) -> str:
    return _run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args], cwd)


def copy_pipeline(src: Path, dest: Path) -> None:
    """Copy a project's pipeline files (``PROJECT_FILES``) into a new folder ``dest``."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif path.exists():
            shutil.copy2(path, dest / name)


def make_project_copy(src: Path, dest: Path, quick: bool) -> Path:
    """A new git + DVC repo holding ``src``'s pipeline (tiny params when ``quick``), committed, empty cache."""
    if dest.exists():
        shutil.rmtree(dest)
    copy_pipeline(src, dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    root = params.get("data", {}).get("root")
    if quick or (root and not Path(root).is_absolute()):
        if root and not Path(root).is_absolute():  # a relative data root means the original project's
            params["data"]["root"] = str((src / root).resolve())
        if quick:
            params = tiny_overrides(params)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text("__pycache__/\n")
    _git(dest, "init", "-q", "-b", "main")
    _run(["dvc", "init", "-q"], dest)
    _run(["dvc", "config", "core.analytics", "false"], dest)
    _git(dest, "add", "-A")
    _git(dest, "commit", "-qm", "bench copy")
    return dest


def timed_repro(project: Path, log: Path, label: str) -> tuple[float, list[str]]:
    """Wall time of ``dvc repro`` in ``project`` and the stages it ran; the full output goes to ``log``."""
    print(f"  dvc repro ({label}) ...", flush=True)
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(["dvc", "repro"], cwd=project, env=_env(project), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc, open(log, "a") as f:
        f.write(f"\n===== dvc repro ({label})\n")
        for line in proc.stdout:
            f.write(line)
            lines.append(line)
            if line.startswith("Running stage"):
                print(f"    {line.strip()}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro ({label}) failed in {project}; see {log}:\n{''.join(lines[-30:])}")
    ran = stages_ran("".join(lines))
    print(f"  dvc repro ({label}): {seconds:.1f} s, {len(ran)} stages", flush=True)
    return seconds, ran


def outputs_stale(project: Path) -> str | None:
    """The stages ``dvc status`` says changed (None when up to date or when it cannot tell)."""
    try:
        proc = subprocess.run(["dvc", "status", "--json"], cwd=project, env=_env(project),
                              capture_output=True, text=True, timeout=300)
        changed = json.loads(proc.stdout or "{}") if proc.returncode == 0 else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
        return None
    return ", ".join(sorted(changed)) or None


def repro_untimed(project: Path, log: Path) -> None:
    timed_repro(project, log, "setup")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "bench run")


# ============================================================== 4. pipeline cost


def pipeline_cost(project: Path, log: Path, mode: str) -> dict[str, Any]:
    """Full run from an empty cache, no-op rerun, rerun after one late change; leaves ``project`` as after
    the full run (the change is undone and the outputs checked out again)."""
    full, ran_full = timed_repro(project, log, "full, empty cache")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "bench full run")
    noop, ran_noop = timed_repro(project, log, "no-op")
    params = yaml.safe_load((project / "params.yaml").read_text())
    change = bump_last_round(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    late, ran_late = timed_repro(project, log, change)
    # back to the full run's state, so the other sections can read its outputs
    _git(project, "reset", "-q", "--hard")
    _git(project, "clean", "-qfd")
    _run(["dvc", "checkout", "-q", "--force"], project)
    return {
        "params": mode,
        "change": change,
        "runs": [
            {"run": "full `dvc repro` (empty cache)", "seconds": round(full, 2), "fraction": 1.0, "stages": ran_full},
            {"run": "no-op `dvc repro`", "seconds": round(noop, 2), "fraction": ratio(noop, full), "stages": ran_noop},
            {"run": "rerun after the change", "seconds": round(late, 2), "fraction": ratio(late, full),
             "stages": ran_late},
        ],
        "noop_fraction": ratio(noop, full),
        "late_fraction": ratio(late, full),
    }


# ============================================================== 1. compression


def round_names(project: Path) -> list[str]:
    params = yaml.safe_load((project / "params.yaml").read_text())
    return list(((params.get("prune") or {}).get("rounds") or {}))


def has_outputs(project: Path) -> bool:
    """Whether ``project`` holds a finished pipeline run (the evaluate stage's shipped section included)."""
    rounds = round_names(project)
    need = [f"models/{n}.pt" for n in (*FP32_MODELS, *rounds[-1:])] + ["data/prepared/meta.json"]
    evaluate_json = project / "metrics/evaluate.json"
    try:
        shipped = "shipped" in json.loads(evaluate_json.read_text())
    except (OSError, json.JSONDecodeError):
        shipped = False
    return shipped and all((project / p).is_file() for p in need)


def compression(project: Path) -> dict[str, Any]:
    """Bytes and test accuracy of every row of ``metrics/evaluate.json``, and its shipped artifact."""
    ev = json.loads((project / "metrics/evaluate.json").read_text())
    shipped = ev.pop("shipped")
    teacher = ev.get("teacher", {})
    rows = []
    for name, r in ev.items():
        rows.append({"model": name, "kind": r.get("kind"), "runtime": r.get("runtime"), "params": r.get("params"),
                     "bytes": r.get("bytes"), "test_acc": r.get("test_acc"),
                     "x_smaller": ratio(teacher.get("bytes"), r.get("bytes")), "acc_vs_teacher": r.get("acc_vs_teacher")})
    parent = shipped.get("parent")
    uint8 = ev.get(f"{parent}.uint8", {}).get("bytes")
    return {
        "source": "metrics/evaluate.json",
        "teacher_bytes": teacher.get("bytes"),
        "shipped": shipped["name"],
        "shipped_artifact": shipped["artifact"],
        "shipped_kind": shipped["kind"],
        "shipped_rule": shipped["rule"],
        "shipped_bytes": shipped["bytes"],
        "uint8_bytes": uint8,
        "shipped_vs_uint8": ratio(shipped["bytes"], uint8),
        "shipped_acc_drop_points": None if shipped.get("acc_vs_parent") is None else -100 * shipped["acc_vs_parent"],
        "parent": parent,
        "size_ratio": ratio(teacher.get("bytes"), shipped["bytes"]),
        "rows": rows,
    }


# ============================================================== 2. latency


def latency(project: Path, work: Path, threads: int, repeats: int, min_time: float, shipped: str) -> dict[str, Any]:
    """Each fp32 model in PyTorch eager and in ORT fp32, and the final model's artifacts, through the one
    measurement layer (``shrink.runtime``); ratios against the teacher (eager) and the unpruned student in
    ORT fp32, from the min of the interleaved samples (medians are reported too)."""
    from .runtime import interleaved, load_runtime, ort_fp32

    rounds = round_names(project)
    final = rounds[-1] if rounds else "distill"
    models, quantized = project / "models", project / "models" / "quantized"
    runtimes = {"teacher": load_runtime(models / "teacher.pt", threads),
                "teacher.ort": ort_fp32(models / "teacher.pt", work, threads),
                "distill": load_runtime(models / "distill.pt", threads),
                REF: ort_fp32(models / "distill.pt", work, threads),
                final: load_runtime(models / f"{final}.pt", threads),
                f"{final}.ort": ort_fp32(models / f"{final}.pt", work, threads)}
    for path in sorted(quantized.glob(f"{final}.*")) + sorted(quantized.glob("distill.int8w.onnx")):
        runtimes[artifact_name(path)] = load_runtime(path, threads)
    size = int(runtimes["teacher"].meta["data"]["image_size"])
    calls = {}
    for b in BATCHES:
        x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b))
        for name, run in runtimes.items():
            calls[(name, b)] = lambda run=run, x=x: run(x)
    bar = tqdm(total=repeats, desc="latency", unit="round", leave=False)
    timing = interleaved(calls, repeats, threads=threads, min_time=min_time, progress=lambda r: bar.update(1))
    bar.close()
    out = []
    for name, run in runtimes.items():
        per_batch = {}
        for b in BATCHES:
            lo = timing.min_ms((name, b))
            per_batch[str(b)] = {"min_ms": round(lo, 4), "median_ms": round(timing.median_ms((name, b)), 4),
                                 "vs_teacher": ratio(timing.min_ms(("teacher", b)), lo),
                                 "vs_ref": ratio(timing.min_ms((REF, b)), lo)}
        out.append({"name": name, "runtime": run.label, "kind": run.kind, "batch": per_batch})
        print(f"  {name:<22} {run.label:<36} " + "  ".join(
            f"b{b}: {per_batch[str(b)]['min_ms']:.3g} ms ({_fmt(per_batch[str(b)]['vs_ref'], '.2f')}x {REF})"
            for b in BATCHES), flush=True)
    row = {r["name"]: r["batch"] for r in out}
    ship = row.get(shipped, {})
    return {"threads": threads, "repeats": repeats, "image_size": size, "reference": REF, "models": out,
            **{k: v for k, v in timing.setup().items() if k != "warnings"}, "timing_warnings": timing.warnings,
            "shipped": shipped,
            "shipped_vs_ref_b1": ship.get("1", {}).get("vs_ref"), "shipped_vs_ref_b64": ship.get("64", {}).get("vs_ref"),
            "shipped_vs_teacher_b64": ship.get("64", {}).get("vs_teacher"),
            "final_ort_vs_ref_b64": row[f"{final}.ort"]["64"]["vs_ref"]}


def artifact_name(path: Path) -> str:
    """``models/quantized/prune_5.int8w.onnx`` -> ``prune_5.int8w``."""
    return path.name.rsplit(".", 1)[0]


# ============================================================== 3. training data path


class SeedStyleDataset(torch.utils.data.Dataset):
    """The course's ``MyDataset``: glob ``*.jpg`` of a Food-11 folder, a PIL image and a transform per item.

    ``preload=True`` is what the course does: every image is opened and decoded at init and kept as a
    PIL image, so an item costs the transforms only. ``preload=False`` opens and decodes the file per item.
    """

    def __init__(self, folder: str | Path, transform: Callable, preload: bool = True) -> None:
        from PIL import Image

        self.files = sorted(Path(folder).glob("*.jpg"))
        self.labels = [food11_label(f) for f in self.files]
        self.transform = transform
        self.images = None
        if preload:
            self.images = []
            for f in self.files:
                with Image.open(f) as img:
                    img.load()
                    self.images.append(img.copy())

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        if self.images is not None:
            image = self.images[i]
        else:
            with Image.open(self.files[i]) as img:
                image = img.convert("RGB")
        return self.transform(image), self.labels[i]


def seed_transform(image_size: int, padding: int, mean: Sequence[float], std: Sequence[float]):
    import torchvision.transforms as T

    return T.Compose([T.RandomCrop(image_size, padding=padding), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


def data_path(project: Path, work: Path, n_images: int, batch_size: int, repeats: int, threads: int,
              seed: int = 0) -> dict[str, Any]:
    """Images/s of ``train_one_epoch`` over prepared tensors vs the course's PIL loader, same images and model."""
    import torch.nn.functional as F

    from .config import TrainParams
    from .data import Split, load_meta, load_split, normalizer
    from .models import StudentNet
    from .train import augment, make_optimizer, train_one_epoch

    torch.set_num_threads(threads)
    prepared = project / "data/prepared"
    meta = load_meta(prepared)
    train = load_split(prepared, "train")
    idx = torch.arange(n_images) % len(train.labels)  # cycle when the split is smaller than n_images
    images, labels = train.images[idx].clone(), train.labels[idx].clone()
    size, classes = int(meta["image_size"]), len(meta["classes"])
    folder = work / "food-11"
    if folder.exists():
        shutil.rmtree(folder)
    print(f"  writing {n_images} prepared train images as {folder}/training/<label>_<i>.jpg", flush=True)
    write_food11_folder(images, labels, folder)
    cfg = TrainParams(epochs=1, batch_size=batch_size, optimizer="adamw", lr=1e-3, crop_padding=2, flip=True)
    transform = seed_transform(size, cfg.crop_padding, meta["mean"], meta["std"])

    t0 = time.perf_counter()
    preloaded = SeedStyleDataset(folder / "training", transform, preload=True)
    preload_s = time.perf_counter() - t0
    lazy = SeedStyleDataset(folder / "training", transform, preload=False)
    assert len(preloaded) == n_images

    def new_model():
        torch.manual_seed(seed)
        model = StudentNet(num_classes=classes)
        return model, make_optimizer(model, cfg)

    def ce(logits, y, _x):
        return F.cross_entropy(logits, y)

    split, norm, gen = Split(images, labels), normalizer(meta), torch.Generator().manual_seed(seed)
    pipe_model, pipe_opt = new_model()

    def run_pipeline():
        train_one_epoch(pipe_model, split, norm, pipe_opt, cfg, gen, loss_fn=ce, desc="pipeline loop")

    def seed_runner(ds):
        model, opt = new_model()
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0,
                                             generator=torch.Generator().manual_seed(seed))

        def run():
            model.train()
            for x, y in loader:  # the course's run_epoch, on the CPU
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return run

    def pipeline_data_only():  # train_one_epoch's data half: batch order, tensor augmentation, normalisation
        order = torch.randperm(n_images, generator=gen)
        for start in range(0, n_images, batch_size):
            idx = order[start : start + batch_size]
            norm(augment(images[idx], cfg.crop_padding, cfg.flip, gen)), labels[idx]

    def seed_data_only():
        for _ in torch.utils.data.DataLoader(preloaded, batch_size=batch_size, shuffle=True, num_workers=0):
            pass

    paths = {"pipeline": run_pipeline, "seed": seed_runner(preloaded), "seed_open": seed_runner(lazy),
             "pipeline_data": pipeline_data_only, "seed_data": seed_data_only}
    # one untimed pass each first (the calibration call): allocator, oneDNN primitives, page cache
    times = interleaved(paths, repeats, threads=threads, warmup=0).times
    ips = {k: n_images / median(v) for k, v in times.items()}
    rows = [
        {"loader": "pipeline: train_one_epoch over prepared uint8 tensors (batched tensor augmentation)",
         "images_per_s": ips["pipeline"], "pipeline_speedup": 1.0},
        {"loader": "course MyDataset, images preloaded as PIL at init (its behaviour): per-item transforms",
         "images_per_s": ips["seed"], "pipeline_speedup": ratio(ips["pipeline"], ips["seed"])},
        {"loader": "course MyDataset variant that opens and decodes the JPEG per item",
         "images_per_s": ips["seed_open"], "pipeline_speedup": ratio(ips["pipeline"], ips["seed_open"])},
        {"loader": "data only (no model): pipeline batches, augment + normalise",
         "images_per_s": ips["pipeline_data"], "pipeline_speedup": 1.0},
        {"loader": "data only (no model): course DataLoader over preloaded PIL images",
         "images_per_s": ips["seed_data"], "pipeline_speedup": ratio(ips["pipeline_data"], ips["seed_data"])},
    ]
    for r in rows:
        print(f"  {r['images_per_s']:8.0f} img/s  {_fmt(r['pipeline_speedup'], '.2f')}x  {r['loader']}", flush=True)
    return {
        "images": n_images,
        "batch_size": batch_size,
        "repeats": repeats,
        "image_size": size,
        "rows": rows,
        # the issue's seed-style loader "opens and transforms a PIL image per item": the per-item-open variant
        "ratio": ratio(ips["pipeline"], ips["seed_open"]),
        "preloaded_ratio": ratio(ips["pipeline"], ips["seed"]),
        "data_only_ratio": ratio(ips["pipeline_data"], ips["seed_data"]),
        "seed_preload_seconds": round(preload_s, 3),
        "note": (f"Both sides do the same augmentation: random crop with padding {cfg.crop_padding} and a random "
                 f"flip, whatever params.yaml says. The course's loader (RandomCrop, RandomHorizontalFlip, ToTensor, "
                 f"Normalize; DataLoader num_workers=0) decodes every JPEG once at init "
                 f"({preload_s:.2f} s here); the target compares whole training loops (data, "
                 f"forward, backward, AdamW step) against the variant that opens, decodes and transforms each "
                 f"image per item, as the seed-style loader of the benchmark's brief does. The data-only rows leave the "
                 f"model out: they show how much of the loop is data."),
    }


# ============================================================== main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="shrink bench",
        description=(
            "Measure what the pipeline buys and write <out>/results.json and <out>/results.md. Sections: "
            "1 compression (teacher bytes / shipped artifact bytes, shipped / uint8 bytes; test accuracy), "
            "2 CPU latency at batch 1 and 64 (teacher, unpruned and pruned student in PyTorch eager and ORT fp32, "
            "the final model's fp16 / uint8 / int8 / int8w artifacts), 3 training data path (prepared tensors vs the course's PIL loader), 4 pipeline cost "
            "(full / no-op / late-change dvc repro in a fresh copy), 5 the machine. Speed figures are ratios of "
            "measurements taken in the same run. Sections 1-3 read the outputs of a default `dvc repro` in "
            "--project (or of section 4's copy when --project has none)."),
        epilog=("Examples: `python -m shrink.bench --quick` (a tiny copy of the project, a few minutes); "
                "`python -m shrink.bench` (default pipeline; section 4 alone reruns it in full, ~10-15 min)."),
    )
    ap.add_argument("--quick", action="store_true",
                    help="run everything on a copy of the project with tiny params (300 images of 16 px, 1 epoch)")
    ap.add_argument("--project", default=".", help="the project folder (default: the current folder)")
    ap.add_argument("--out", default="bench", help="where results.json, results.md and work/ go (default: bench/)")
    ap.add_argument("--skip-pipeline", action="store_true", help="skip section 4 (the timed dvc repro runs)")
    ap.add_argument("--skip-data-path", action="store_true", help="skip section 3 (the training data path)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="samples per figure in sections 2 and 3 (default: 25 latency / 5 data path; "
                         "--quick: 5 / 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads (default: 2)")
    ap.add_argument("--images", type=int, default=None,
                    help="images per pass in section 3 (default: 2048; --quick: 512)")
    ap.add_argument("--keep-work", action="store_true", help="keep <out>/work/ (project copies, ONNX files, JPEGs)")
    args = ap.parse_args(argv)
    if args.threads < 1 or (args.repeats is not None and args.repeats < 1):
        ap.error("--threads and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    project = Path(args.project).resolve()
    if not (project / "dvc.yaml").is_file():
        print(f"shrink bench: error: {project}: no dvc.yaml (use --project)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out = (out if out.is_absolute() else Path.cwd() / out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "dvc.log"
    log.write_text("")
    mode = "quick" if args.quick else "default"
    lat_repeats = args.repeats or (5 if args.quick else 25)
    data_repeats = args.repeats or (2 if args.quick else 5)
    n_images = args.images or (512 if args.quick else 2048)
    min_time = 0.02 if args.quick else 0.05

    results: dict[str, Any] = {"mode": mode, "threads": args.threads, "machine": machine_info()}
    results["machine"]["project_commit"] = _git_commit(project)
    results["warnings"] = busy_warnings(args.threads)
    for w in results["warnings"]:
        print(f"warning: {w}", flush=True)
    t_start = time.perf_counter()

    # 4 first: it makes the copy that quick mode (or a project without outputs) measures in 1-3
    source = project
    copy = None
    if args.quick or not args.skip_pipeline:
        copy = make_project_copy(project, work / "project", quick=args.quick)
    if not args.skip_pipeline:
        print(f"[4/5] pipeline cost: {mode} pipeline in a fresh copy ({copy}); dvc output in {log}", flush=True)
        try:
            results["pipeline"] = pipeline_cost(copy, log, mode)
        except RuntimeError as e:
            if args.quick:  # the tiny copy is what sections 1-3 measure: nothing left to do
                raise
            first = str(e).splitlines()[0]
            print(f"warning: section 4 failed, going on without it: {first}", file=sys.stderr, flush=True)
            results["pipeline"] = {"error": first}
            copy = None
    elif args.quick:
        print(f"[4/5] pipeline cost: skipped; running the tiny pipeline once in {copy}", flush=True)
        repro_untimed(copy, log)
    if args.quick:
        source = copy
    elif not has_outputs(project):
        if copy is None:
            print(f"shrink bench: error: {project} has no pipeline outputs (models/, data/prepared/): run "
                  f"`dvc repro` (or `make run`) first, or drop --skip-pipeline", file=sys.stderr)
            return 2
        print(f"  {project} has no pipeline outputs: sections 1-3 use the copy's", flush=True)
        source = copy
    results["measured_project"] = str(source)
    if source == project:
        stale = outputs_stale(project)
        if stale:
            results["warnings"].append(f"{project}: `dvc status` reports changes ({stale}); sections 1-3 measure "
                                       f"outputs that the current code and params would not produce: run `dvc repro`.")
            print(f"warning: {results['warnings'][-1]}", flush=True)

    print(f"[1/5] compression ({source})", flush=True)
    results["compression"] = c = compression(source)
    print(f"  teacher {_fmt_bytes(c['teacher_bytes'])} / shipped {c['shipped']} {_fmt_bytes(c['shipped_bytes'])}"
          f" = {_fmt(c['size_ratio'], '.1f')}x; {_fmt(c['shipped_vs_uint8'], '.3f')}x the uint8 file", flush=True)

    print(f"[2/5] latency: {lat_repeats} round-robin repeats, {args.threads} threads", flush=True)
    results["latency"] = lat = latency(source, work, args.threads, lat_repeats, min_time, c["shipped"])
    if not results["warnings"]:  # busy only during the timing: say so (once)
        results["warnings"] += lat["timing_warnings"]

    if args.skip_data_path:
        print("[3/5] training data path: skipped", flush=True)
    else:
        print(f"[3/5] training data path: {n_images} images, batch 128, {data_repeats} repeats", flush=True)
        results["data_path"] = data_path(source, work, n_images, 128, data_repeats, args.threads)

    print("[5/5] machine", flush=True)
    results["machine"]["load_after"] = _load()
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["targets"] = [t.as_dict() for t in (
        check_target("size", c["size_ratio"]),
        check_target("shipped_bytes", c["shipped_bytes"]),
        check_target("shipped_vs_uint8", c["shipped_vs_uint8"]),
        check_target("shipped_b1", lat["shipped_vs_ref_b1"]),
        check_target("shipped_b64", lat["shipped_vs_ref_b64"]),
        check_target("pruned_b64", lat["final_ort_vs_ref_b64"]),
        check_target("accuracy", c["shipped_acc_drop_points"]),
        check_target("data_path", (results.get("data_path") or {}).get("ratio")),
        check_target("late_rerun", (results.get("pipeline") or {}).get("late_fraction")),
    )]

    from .io import write_json, write_text

    write_json(results, out / "results.json")
    md = render_markdown(results)
    write_text(md + "\n", out / "results.md")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + md)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
