"""The benchmark's results as a markdown page (``bench/results.md``): targets first, then one table per section."""
from __future__ import annotations

import math
from typing import Any, Mapping

from ..evaluate import REFERENCE


def fmt(x: Any, spec: str = ".3g", none: str = "—") -> str:
    """``format(x, spec)``, with ``none`` for a missing value and ∞ for an infinite one."""
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return format(x, spec)


def fmt_bytes(n: int | None) -> str:
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
        return f"**missed**: needs {fmt(short, '.2f')}x more"
    return f"**missed**: {fmt(short, '.2f')}x over"


def _times(cell: Mapping[str, Any]) -> str:
    return f"{fmt(cell.get('median_ms'), '.3g')} / {fmt(cell.get('min_ms'), '.3g')}"


def speedup(x: float | None) -> str:
    """A speed ratio: two decimals, or two significant digits below 0.1 (0.002x, not 0.00x)."""
    return fmt(x, ".2f" if x is None or abs(x) >= 0.1 else ".2g") + ("x" if x is not None else "")


def _head(results: Mapping[str, Any]) -> list[str]:
    out = [f"# Benchmark ({results.get('mode', '?')} mode)", ""]
    m = results.get("machine") or {}
    if m:
        out += [f"{m.get('date', '')} on {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores "
                f"({m.get('affinity', '?')} usable). Other processes kept {fmt(m.get('busy_before'), '.2f')} cores "
                f"busy before, {fmt(m.get('busy_after'), '.2f')} after (1-minute load average "
                f"{fmt(m.get('load_before'), '.2f')}, {fmt(m.get('load_after'), '.2f')}).", ""]
    for w in results.get("warnings", []):
        out += [f"> **Warning:** {w}", ""]
    out += ["Speed figures are ratios of measurements taken side by side in one run (the machine is shared): "
            "latency in the evaluate stage's run (`metrics/latency.json`), the data path in this one. "
            "Absolute times are for reference only.", ""]
    out += ["## Targets", "", "| target | measured | goal | verdict |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        goal = f"{t['op']} {t['goal']:,}" + ("x" if t["op"] == ">=" else "")
        out.append(f"| {t['label']} | {_target_value(t)} | {goal} | {_target_verdict(t)} |")
    return out + [""]


def _compression(c: Mapping[str, Any]) -> list[str]:
    out = ["## 1. Compression", "",
           f"Teacher fp32: {fmt_bytes(c.get('teacher_bytes'))}; shipped artifact `{c.get('shipped')}`: "
           f"{fmt_bytes(c.get('shipped_bytes'))}, **{fmt(c.get('size_ratio'), '.1f')}x smaller**; "
           f"{fmt(c.get('shipped_vs_uint8'), '.3f')}x the course's uint8 file of the same network "
           f"({fmt_bytes(c.get('uint8_bytes'))}). Chosen by the evaluate stage: {c.get('shipped_rule', '?')}. "
           f"Source: {c.get('source', '?')}.", "",
           "| model | runtime | params | bytes | x smaller than teacher | test acc | acc − teacher (points) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in c.get("rows", []):
        delta = r.get("acc_vs_teacher")
        out.append(f"| {r['model']} | {r.get('runtime') or '—'} | {fmt(r.get('params'), ',')} | "
                   f"{fmt_bytes(r.get('bytes'))} | {fmt(r.get('x_smaller'), '.1f')} | "
                   f"{fmt(r.get('test_acc'), '.4f')} | "
                   f"{fmt(None if delta is None else 100 * delta, '+.2f')} |")
    return out + [""]


def _latency(lat: Mapping[str, Any]) -> list[str]:
    ref, bs = lat.get("reference", REFERENCE), lat.get("batch_sizes", [])
    out = ["## 2. Inference latency (CPU)", "",
           f"Measured by the evaluate stage, not by this command: {lat.get('source', 'metrics/latency.json')} "
           f"of the measured project ({lat.get('statistic') or 'median and min of the repeats'}). "
           f"{lat.get('repeats')} interleaved samples per model (shrink.runtime.interleaved) after "
           f"{lat.get('warmup')} warm-up run(s), {lat.get('threads')} thread(s) (params.yaml evaluate.threads), "
           f"{lat.get('image_size')} px inputs; load average {fmt(lat.get('load_before'), '.2f')} before, "
           f"{fmt(lat.get('load_after'), '.2f')} after. Times: median / min (ms). Speed-up = the teacher's or "
           f"`{ref}`'s median time / the model's median time; `{ref}` is the unpruned student exported to ONNX "
           f"and run by ORT fp32. Rows: the teacher, the unpruned student, the final model and their artifacts "
           f"(every model is in report.md).", "",
           "| model | runtime | " + " | ".join(f"batch {b} (ms)" for b in bs) + " | "
           + " | ".join(f"vs teacher b{b}" for b in bs) + " | " + " | ".join(f"vs {ref} b{b}" for b in bs) + " |",
           "|---|---|" + "---:|" * (3 * len(bs))]
    for r in lat.get("models", []):
        cells = [r["batch"].get(str(b), {}) for b in bs]
        out.append(f"| {r['name']} | {r.get('runtime') or '—'} | "
                   + " | ".join([_times(x) for x in cells] + [speedup(x.get("vs_teacher")) for x in cells]
                                + [speedup(x.get("vs_ref")) for x in cells]) + " |")
    return out + [""]


def _data_path(d: Mapping[str, Any], threads: Any) -> list[str]:
    out = ["## 3. Training data path", "",
           f"{d.get('images')} images, batch {d.get('batch_size')}, the same StudentNet, AdamW step included, "
           f"{d.get('threads', threads)} thread(s), median of {d.get('repeats')} interleaved "
           f"passes after one untimed pass. {d.get('note', '')}", "",
           "| loader | images/s | pipeline is faster by |", "|---|---:|---:|"]
    for r in d.get("rows", []):
        faster = speedup(r.get("pipeline_speedup"))
        out.append(f"| {r['loader']} | {fmt(r.get('images_per_s'), '.0f')} | {faster} |")
    return out + [""]


def _pipeline(p: Mapping[str, Any]) -> list[str]:
    if p.get("error"):
        return ["## 4. Pipeline cost", "", f"Not measured: {p['error']}", ""]
    out = ["## 4. Pipeline cost", "", f"A fresh copy of the project ({p.get('params', '?')} params), empty DVC "
           f"cache. Changed for the rerun: `{p.get('change')}`.", "",
           "| run | wall time (s) | fraction of the full run | stages run |", "|---|---:|---:|---|"]
    for r in p.get("runs", []):
        out.append(f"| {r['run']} | {fmt(r.get('seconds'), '.1f')} | {fmt(r.get('fraction'), '.3f')} | "
                   f"{', '.join(r.get('stages', [])) or 'none'} |")
    return out + [""]


def _machine(m: Mapping[str, Any]) -> list[str]:
    out = ["## 5. Machine", "", "| | |", "|---|---|"]
    for k in ("cpu", "cpu_count", "affinity", "python", "torch", "onnxruntime", "dvc", "platform", "date",
              "project_commit"):
        if k in m:
            out.append(f"| {k} | {m[k]} |")
    return out + [""]


def render_markdown(results: Mapping[str, Any]) -> str:
    """The results as a markdown page: targets first, then one table per section (those that ran)."""
    out = _head(results)
    sections = (("compression", _compression), ("latency", _latency),
                ("data_path", lambda d: _data_path(d, results.get("threads", "?"))), ("pipeline", _pipeline),
                ("machine", _machine))
    for key, render in sections:
        if results.get(key):
            out += render(results[key])
    return "\n".join(out)
