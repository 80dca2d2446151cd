"""Sections 1, 2, 4 and 5 of the benchmark: what the evaluate stage measured, what ``dvc repro`` costs, the machine.

Sections 1 and 2 time nothing: they read the evaluate stage's outputs of the project they measure
(``metrics/evaluate.json`` for bytes and accuracy, ``metrics/latency.json`` for latency), so every latency
figure comes from the one timer (``runtime.interleaved``) with one schema, and the benchmark keeps no model
list of its own (the fp32 models are evaluate's rows).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import cores
from ..evaluate import REFERENCE
from ..runtime import FP32_LABELS, load_average, others_busy
from .project import bump_last_round, dvc, git, timed_repro
from .targets import ratio

EAGER_FP32 = FP32_LABELS["torch"]  # evaluate's rows of fp32 checkpoints (not their .ort exports)


def read_metrics(project: Path, name: str) -> dict[str, Any]:
    """``project/metrics/<name>``, parsed (a missing or broken file is a one-line error naming it)."""
    path = project / "metrics" / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RuntimeError(f"{path}: cannot read the evaluate stage's output ({e}); run `dvc repro`") from None


def has_outputs(project: Path) -> bool:
    """Whether ``project`` holds a finished pipeline run: evaluate's two metrics files (with a shipped
    artifact) and the prepared data (section 3)."""
    try:
        ev = json.loads((project / "metrics/evaluate.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "shipped" in ev and all((project / p).is_file() for p in ("metrics/latency.json", "data/prepared/meta.json"))


# ============================================================== 1. compression


def compression(project: Path) -> dict[str, Any]:
    """Bytes and test accuracy of every row of ``metrics/evaluate.json``, and its shipped artifact."""
    ev = read_metrics(project, "evaluate.json")
    shipped = ev.pop("shipped")
    teacher = ev.get("teacher", {})
    rows = []
    for name, r in ev.items():
        rows.append({"model": name, "kind": r.get("kind"), "runtime": r.get("runtime"), "params": r.get("params"),
                     "bytes": r.get("bytes"), "test_acc": r.get("test_acc"),
                     "x_smaller": ratio(teacher.get("bytes"), r.get("bytes")),
                     "acc_vs_teacher": r.get("acc_vs_teacher")})
    # evaluate lists the fp32 checkpoints in pipeline order (teacher, student, distill, rounds): the last is final
    fp32 = [name for name, r in ev.items() if r.get("kind") == "fp32" and r.get("runtime") == EAGER_FP32]
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
        "shipped_acc_drop_points": None if shipped.get("acc_vs_parent") is None
        else 0.0 - 100 * shipped["acc_vs_parent"],  # 0.0 - : no "-0" when nothing was lost
        "parent": parent,
        "final": fp32[-1] if fp32 else None,
        "size_ratio": ratio(teacher.get("bytes"), shipped["bytes"]),
        "rows": rows,
    }


# ============================================================== 2. latency


def latency(project: Path, final: str | None, shipped: str) -> dict[str, Any]:
    """The rows of ``metrics/latency.json`` for the teacher, the unpruned student, the final model and their
    artifacts (``report.md`` has every row), in evaluate's schema: median and min per batch size, and
    evaluate's speed-ups (median / median) against the teacher and against ``REFERENCE``.

    Args:
        project: the project whose evaluate stage measured.
        final: the last fp32 model of the pipeline (``compression(...)["final"]``).
        shipped: the shipped artifact's row name.
    """
    lat = read_metrics(project, "latency.json")
    setup = lat.pop("_setup", {})
    lat.pop("shipped", None)  # its own section, not a row
    batches = sorted({int(m.group(1)) for row in lat.values() for k in row
                      if (m := re.fullmatch(r"latency_b(\d+)_ms", k))})
    keep = {"teacher", "distill", final, shipped.split(".")[0]}
    models = []
    for name, row in lat.items():
        if name.split(".")[0] not in keep:
            continue
        models.append({"name": name, "runtime": row.get("runtime"), "batch": {
            str(b): {"median_ms": row.get(f"latency_b{b}_ms"), "min_ms": row.get(f"min_b{b}_ms"),
                     "vs_teacher": row.get(f"speedup_b{b}_vs_teacher"),
                     "vs_ref": row.get(f"speedup_b{b}_vs_{REFERENCE}")} for b in batches}})

    def vs_ref(name: str, b: int) -> float | None:
        return lat.get(name, {}).get(f"speedup_b{b}_vs_{REFERENCE}")

    machine = setup.get("latency_machine", {})
    return {"source": "metrics/latency.json", "statistic": setup.get("statistic"),
            "threads": setup.get("threads"), "repeats": setup.get("repeats"), "warmup": setup.get("warmup"),
            "image_size": setup.get("image_size"), "load_before": machine.get("load_before"),
            "load_after": machine.get("load_after"), "warnings": machine.get("warnings", []),
            "reference": REFERENCE, "batch_sizes": batches, "models": models, "shipped": shipped, "final": final,
            "shipped_vs_ref_b1": vs_ref(shipped, 1), "shipped_vs_ref_b64": vs_ref(shipped, 64),
            "final_ort_vs_ref_b64": vs_ref(f"{final}.ort", 64) if final else None}


# ============================================================== 4. pipeline cost


def pipeline_cost(project: Path, log: Path, mode: str) -> dict[str, Any]:
    """Full run from an empty cache, no-op rerun, rerun after one late change; leaves ``project`` as after
    the full run (the change is undone and the outputs checked out again)."""
    full, ran_full = timed_repro(project, log, "full, empty cache")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "bench full run")
    noop, ran_noop = timed_repro(project, log, "no-op")
    params = yaml.safe_load((project / "params.yaml").read_text())
    change = bump_last_round(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    late, ran_late = timed_repro(project, log, change)
    # back to the full run's state, so the other sections can read its outputs
    git(project, "reset", "-q", "--hard")
    git(project, "clean", "-qfd")
    dvc(project, "checkout", "-q", "--force")
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


# ============================================================== 5. the machine


def machine_state() -> dict[str, Any]:
    """How busy the machine is now: cores kept busy by other processes (``runtime.others_busy``) and the
    1-minute load average (``runtime.load_average``)."""
    return {"busy": others_busy(), "load": load_average()}


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions, date, and the machine's state now (``*_before``)."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    state = machine_state()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity": cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "busy_before": state["busy"],
        "load_before": state["load"],
    }
    for mod in ("onnxruntime", "dvc"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # a version is nice to have, never a reason to fail
            info[mod] = None
    return info
