"""``shrink bench``'s command line: run the sections in order, check the targets, write the results."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ..io import write_json, write_text
from ..runtime import busy_warnings
from .project import git_commit, make_project_copy, outputs_stale, repro_untimed
from .report import fmt, fmt_bytes, render_markdown, speedup
from .sections import compression, has_outputs, latency, machine_info, machine_state, pipeline_cost
from .targets import check_target

BATCH_SIZE = 128  # section 3's batch, both loaders


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="shrink bench",
        description=(
            "Measure what the pipeline buys and write <out>/results.json and <out>/results.md. Sections: "
            "1 compression (teacher bytes / shipped artifact bytes, shipped / uint8 bytes; test accuracy), "
            "2 CPU latency at evaluate.batch_sizes (teacher, unpruned and final student in PyTorch eager and ORT "
            "fp32, their quantized artifacts), 3 training data path (prepared tensors vs the course's PIL loader), "
            "4 pipeline cost (full / no-op / late-change dvc repro in a fresh copy), 5 the machine. Sections 1-2 "
            "read what the evaluate stage measured (metrics/evaluate.json, metrics/latency.json: median latencies "
            "of interleaved samples); they read the outputs of `dvc repro` in --project (or of section 4's copy "
            "when --project has none). Speed figures are ratios of measurements taken in the same run."),
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
                    help="timed passes in section 3 (default: 5; --quick: 2); section 2's are evaluate.repeats")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads in section 3 (default: 2); section 2's are evaluate.threads")
    ap.add_argument("--images", type=int, default=None,
                    help="images per pass in section 3 (default: 2048; --quick: 512)")
    ap.add_argument("--keep-work", action="store_true", help="keep <out>/work/ (project copies, JPEGs, dvc log)")
    args = ap.parse_args(argv)
    if args.threads < 1 or (args.repeats is not None and args.repeats < 1):
        ap.error("--threads and --repeats must be >= 1")
    return args


def pipeline_section(args: argparse.Namespace, project: Path, work: Path, log: Path,
                     results: dict[str, Any]) -> Path | None:
    """Section 4, first: it makes the copy that quick mode (or a project without outputs) measures in 1-3.
    Returns that copy (None: none was made, or section 4 failed on it)."""
    mode = results["mode"]
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
    return copy


def measured_source(args: argparse.Namespace, project: Path, copy: Path | None, results: dict[str, Any]) -> Path | None:
    """The project whose outputs sections 1-3 read: the tiny copy (--quick), the project itself, or the copy
    when the project has no outputs; None (after the error line) when there is none to read."""
    source = project
    if args.quick:
        source = copy
    elif not has_outputs(project):
        if copy is None:
            print(f"shrink bench: error: {project} has no pipeline outputs (metrics/evaluate.json with a shipped "
                  f"artifact, metrics/latency.json, data/prepared/): run `dvc repro` (or `make run`) first, or drop "
                  f"--skip-pipeline", file=sys.stderr)
            return None
        print(f"  {project} has no pipeline outputs: sections 1-3 use the copy's", flush=True)
        source = copy
    results["measured_project"] = str(source)
    if source == project:
        stale = outputs_stale(project)
        if stale:
            results["warnings"].append(f"{project}: `dvc status` reports changes ({stale}); sections 1-3 measure "
                                       f"outputs that the current code and params would not produce: run `dvc repro`.")
            print(f"warning: {results['warnings'][-1]}", flush=True)
    return source


def measure(args: argparse.Namespace, source: Path, work: Path, results: dict[str, Any]) -> None:
    """Sections 1-3 over ``source``'s outputs, into ``results``."""
    print(f"[1/5] compression ({source}/metrics/evaluate.json)", flush=True)
    results["compression"] = c = compression(source)
    print(f"  teacher {fmt_bytes(c['teacher_bytes'])} / shipped {c['shipped']} {fmt_bytes(c['shipped_bytes'])}"
          f" = {fmt(c['size_ratio'], '.1f')}x; {fmt(c['shipped_vs_uint8'], '.3f')}x the uint8 file", flush=True)

    print(f"[2/5] latency: what the evaluate stage measured ({source}/metrics/latency.json)", flush=True)
    results["latency"] = lat = latency(source, c["final"], c["shipped"])
    results["warnings"] += [f"metrics/latency.json (evaluate's timing): {w}" for w in lat["warnings"]]
    for r in lat["models"]:
        print(f"  {r['name']:<22} {r['runtime']:<36} " + "  ".join(
            f"b{b}: {fmt(r['batch'][str(b)]['median_ms'], '.3g')} ms ({speedup(r['batch'][str(b)]['vs_ref'])} "
            f"{lat['reference']})" for b in lat["batch_sizes"]) + "  [median]", flush=True)

    if args.skip_data_path:
        print("[3/5] training data path: skipped", flush=True)
        return
    from .datapath import data_path  # torchvision, the training loop: only when section 3 runs

    repeats = args.repeats or (2 if args.quick else 5)
    n_images = args.images or (512 if args.quick else 2048)
    print(f"[3/5] training data path: {n_images} images, batch {BATCH_SIZE}, {repeats} repeats", flush=True)
    results["data_path"] = data_path(source, work, n_images, BATCH_SIZE, repeats, args.threads)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target, checked against what the sections measured."""
    c, lat = results["compression"], results["latency"]
    return [t.as_dict() for t in (
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

    results: dict[str, Any] = {"mode": "quick" if args.quick else "default", "threads": args.threads,
                               "machine": machine_info()}
    results["machine"]["project_commit"] = git_commit(project)
    results["warnings"] = busy_warnings(args.threads)
    for w in results["warnings"]:
        print(f"warning: {w}", flush=True)
    t_start = time.perf_counter()
    copy = pipeline_section(args, project, work, log, results)
    source = measured_source(args, project, copy, results)
    if source is None:
        return 2
    measure(args, source, work, results)

    print("[5/5] machine", flush=True)
    state = machine_state()
    results["machine"].update(busy_after=state["busy"], load_after=state["load"])
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["targets"] = targets(results)
    write_json(results, out / "results.json")
    md = render_markdown(results)
    write_text(md + "\n", out / "results.md")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + md)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({results['seconds']:.0f} s)")
    return 0
