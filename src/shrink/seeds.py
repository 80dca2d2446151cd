"""``shrink seeds``: pool the DVC experiments that differ in ``seed`` alone into mean ± sd (n) per model.

The runs are what ``dvc exp show --json`` lists for HEAD: the workspace, the HEAD commit and its experiments
(``dvc exp run --queue -S seed=1``, ``-S seed=2``, then ``dvc queue start``). Runs are grouped by every param
except ``seed``: only runs that differ in seed alone are pooled. Each figure is read from the files the run
committed (git: the metrics files, ``plots/prune.csv`` and ``dvc.lock`` are ``cache: false`` outputs, so every
experiment commit holds them):

- per model: ``--metric`` (default ``test_acc``) of ``metrics/<stage>.json`` and ``metrics/prune/<round>.json``;
- the shipped file: its name, bytes and ``--metric`` from ``metrics/summary.json`` (``shipped``);
- the trade-off: each round's artifact of the shipped kind, its bytes and ``--metric``, from ``plots/prune.csv``.

An experiment run up to a target (``dvc exp run --queue -S seed=1 distill``) still holds the other stages' files
of the commit it started from, figures of another seed. A file counts for a run only when ``dvc.lock`` says the
stage that wrote it ran with the run's seed and from the outputs of stages that did too (``current_outputs``);
the others are left out of that run, so n counts the runs that measured a figure.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .charts import new_figure, styled, png_bytes
from .io import atomic_path, write_text
from .stats import mean_sd

PARAMS = "params.yaml"
SUMMARY = "metrics/summary.json"
PRUNE_CSV = "plots/prune.csv"
PROG = "shrink seeds"


class SeedsError(Exception):
    """What is missing, one line: ``<file or key>: <what>``."""


@dataclass(frozen=True)
class Run:
    """One run of the pipeline: the workspace, a commit or an experiment.

    Attributes:
        name: ``workspace``, the baseline's branch or commit, or the experiment's name.
        rev: the git commit that holds its files; None: the working tree.
        seed: its ``seed`` param. params: its other params (every params file; ``seed`` dropped).
    """

    name: str
    rev: str | None
    seed: Any
    params: dict[str, Any]


@dataclass
class Figures:
    """What one run measured with its own seed: model -> value, the shipped file, the trade-off rows."""

    models: dict[str, float] = field(default_factory=dict)
    shipped: dict[str, Any] | None = None
    tradeoff: dict[str, tuple[float, float]] = field(default_factory=dict)  # "<model>.<kind>" -> (bytes, value)


# ------------------------------------------------------------------ the runs DVC knows


def _exp_show(root: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SeedsError(f"{root}: dvc exp show failed: {detail[-1] if detail else proc.returncode}")
    return json.loads(proc.stdout or "[]")


def _run(name: str, rev: str | None, data: dict[str, Any] | None) -> Run | None:
    params = {f: dict(p.get("data") or {}) for f, p in ((data or {}).get("params") or {}).items()}
    if PARAMS not in params:
        return None
    if "seed" not in params[PARAMS]:
        raise SeedsError(f"{PARAMS}: seed: missing in {name} (shrink seeds pools runs that differ in seed alone)")
    seed = params[PARAMS].pop("seed")
    return Run(name, rev, seed, params)


def list_runs(root: Path) -> list[Run]:
    """The workspace, HEAD and HEAD's finished experiments, in that order (queued, running and failed ones
    are left out), from ``dvc exp show --json``."""
    runs = []
    for entry in _exp_show(root):
        rev = None if entry.get("rev") == "workspace" else entry.get("rev")
        run = _run("workspace" if rev is None else entry.get("name") or rev[:7], rev, entry.get("data"))
        runs += [run] if run else []
        for exp in entry.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state", "success")
            for r in (exp.get("revs") or [])[:1] if state == "success" else []:
                run = _run(exp.get("name") or r["rev"][:7], r["rev"], r.get("data"))
                runs += [run] if run else []
    return runs


def read_file(root: Path, rev: str | None, path: str) -> str | None:
    """A file's text as the run left it (None when it has none): ``git show rev:path``, or the working tree."""
    if rev is None:
        file = root / path
        return file.read_text() if file.is_file() else None
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


# ------------------------------------------------------------------ which files a run's seed wrote


def current_outputs(lock: dict[str, Any], seed: Any) -> list[str]:
    """The outputs in ``dvc.lock`` whose stage ran with ``seed`` (when it reads it) on the outputs of stages
    that did: the files that are this run's own, not left over from the commit the run started from."""
    stages = lock.get("stages") or {}
    owner = {o["path"]: (name, o.get("md5")) for name, s in stages.items() for o in s.get("outs") or []}
    memo: dict[str, bool] = {}

    def current(name: str) -> bool:
        if name not in memo:
            memo[name] = False  # a cycle is no evidence
            stage = stages[name]
            params = (stage.get("params") or {}).get(PARAMS) or {}
            ok = "seed" not in params or params["seed"] == seed
            for dep in stage.get("deps") or []:
                up = owner.get(dep["path"])
                if ok and up is not None:
                    ok = up[1] == dep.get("md5") and current(up[0])
            memo[name] = ok
        return memo[name]

    return [path for path, (name, _) in owner.items() if current(name)]  # in the pipeline's order


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def run_figures(root: Path, run: Run, metric: str) -> Figures:
    """What ``run`` measured with its own seed (see ``current_outputs``)."""
    out = Figures()
    lock = yaml.safe_load(read_file(root, run.rev, "dvc.lock") or "{}") or {}
    own = current_outputs(lock, run.seed)
    for path in (p for p in own if p.startswith("metrics/") and p.endswith(".json") and p != SUMMARY):
        data = json.loads(read_file(root, run.rev, path) or "{}")
        value = _float(data.get(metric)) if isinstance(data, dict) else None
        if value is not None:
            out.models[Path(path).stem] = value
    if SUMMARY in own:
        shipped = json.loads(read_file(root, run.rev, SUMMARY) or "{}").get("shipped")
        out.shipped = shipped if isinstance(shipped, dict) and "name" in shipped else None
    if PRUNE_CSV in own:
        for row in csv.DictReader(io.StringIO(read_file(root, run.rev, PRUNE_CSV) or "")):
            x, y = _float(row.get("bytes")), _float(row.get(metric))
            if x is not None and y is not None:
                out.tradeoff[f"{row['model']}.{row.get('kind', '')}".rstrip(".")] = (x, y)
    return out


# ------------------------------------------------------------------ pooling


@dataclass
class Group:
    """Runs with the same params but ``seed``: seed -> that seed's figures (the first run that has each)."""

    params: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    seeds: dict[Any, Figures] = field(default_factory=dict)

    def add(self, run: Run, figs: Figures) -> None:
        self.runs.append(run)
        have = self.seeds.setdefault(run.seed, Figures())
        for model, v in figs.models.items():
            have.models.setdefault(model, v)
        have.shipped = have.shipped or figs.shipped
        have.tradeoff = have.tradeoff or figs.tradeoff

    def measured(self) -> dict[Any, Figures]:
        """The seeds that measured anything, in order of seed."""
        return {s: f for s, f in sorted(self.seeds.items(), key=lambda kv: (str(type(kv[0])), kv[0]))
                if f.models or f.shipped or f.tradeoff}


def group_runs(runs: Iterable[Run], figures: Iterable[Figures]) -> list[Group]:
    """Groups of runs that differ in seed alone, in order of first appearance."""
    groups: dict[str, Group] = {}
    for run, figs in zip(runs, figures):
        key = json.dumps(run.params, sort_keys=True, default=str)
        groups.setdefault(key, Group(run.params)).add(run, figs)
    return list(groups.values())


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def group_label(group: Group, first: Group) -> str:
    """The params in which ``group`` differs from ``first`` (``key=value, ...``), or ``params of <run>``."""
    a = _flat(group.params.get(PARAMS, {}))
    b = _flat(first.params.get(PARAMS, {}))
    diff = [f"{k}={a.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diff) if diff else f"params of {group.runs[0].name}"


def stat_text(values: list[float], digits: int | None = None) -> str:
    """``mean ± sd (n)``: ``digits`` decimals (None: whole numbers with thousands separators); ``(1)``
    alone for a single value, which has no sd."""
    m, sd, n = mean_sd(values)
    fmt = (lambda v: f"{v:,.0f}") if digits is None else (lambda v: f"{v:.{digits}f}")
    return f"{fmt(m)} ({n})" if n == 1 else f"{fmt(m)} ± {fmt(sd)} ({n})"


# ------------------------------------------------------------------ the table and the chart


def _digits(values: Iterable[float]) -> int | None:
    """None (whole numbers) for counts such as MACs, else 4 decimals (accuracies, losses)."""
    values = [float(v) for v in values]
    return None if all(v.is_integer() for v in values) and max(map(abs, values)) > 1 else 4


def _pool(per_seed: dict[Any, Figures], pick) -> dict[str, list[tuple[Any, Any]]]:
    """name -> [(seed, value), ...] over the seeds, for what ``pick(figures)`` returns as a dict."""
    out: dict[str, list[tuple[Any, Any]]] = {}
    for seed, figs in per_seed.items():
        for name, v in pick(figs).items():
            out.setdefault(name, []).append((seed, v))
    return out


def group_table(group: Group, metric: str) -> list[str]:
    """Markdown lines of one group: its models, the shipped file, the trade-off rows."""
    seeds = group.measured()
    lines = [f"| model | {metric} | seeds |", "|---|---|---|"]
    for model, pts in _pool(seeds, lambda f: f.models).items():
        vals = [v for _, v in pts]
        lines.append(f"| {model} | {stat_text(vals, _digits(vals))} | {', '.join(str(s) for s, _ in pts)} |")
    shipped = {s: f.shipped for s, f in seeds.items() if f.shipped}
    if shipped:
        vals = [_float(s.get(metric)) for s in shipped.values()]
        vals = [v for v in vals if v is not None]
        size = [_float(s.get("bytes")) for s in shipped.values() if _float(s.get("bytes")) is not None]
        names = "; ".join(f"seed {seed}: {s['name']}" for seed, s in shipped.items())
        lines += ["", f"| shipped file | {metric} | bytes | what shipped |", "|---|---|---|---|",
                  f"| {SUMMARY} | {stat_text(vals, _digits(vals)) if vals else '–'} | "
                  f"{stat_text(size) if size else '–'} | {names} |"]
    rows = _pool(seeds, lambda f: f.tradeoff)
    if rows:
        lines += ["", f"| trade-off ({PRUNE_CSV}): artifact | bytes | {metric} |", "|---|---|---|"]
        for name, pts in rows.items():
            ys = [v[1] for _, v in pts]
            lines.append(f"| {name} | {stat_text([v[0] for _, v in pts])} | {stat_text(ys, _digits(ys))} |")
    return lines


def write_markdown(groups: list[Group], pooled: list[Group], runs: list[Run], metric: str) -> str:
    """The whole page: what was found, then one section per pooled group."""
    lines = ["# Seeds", "",
             f"{len(runs)} runs ({', '.join(r.name for r in runs)}) in {len(groups)} group(s) of equal params "
             f"but `seed`; {len(pooled)} group(s) with two seeds or more, pooled below as mean ± sd (n). "
             f"n counts the runs that measured the figure with their own seed (`dvc.lock`); an experiment run "
             f"up to a stage measured nothing below it.", ""]
    for g in pooled:
        seeds = ", ".join(str(s) for s in g.measured())
        lines += [f"## {group_label(g, groups[0])}: seeds {seeds}", "",
                  f"Runs: {', '.join(f'{r.name} (seed {r.seed})' for r in g.runs)}.", "",
                  *group_table(g, metric), ""]
    return "\n".join(lines)


@styled
def tradeoff_chart(pooled: list[Group], first: Group, metric: str):
    """``metric`` against bytes (log x) of each round's shipped-kind artifact, mean ± sd over the seeds as
    error bars, one series per pooled group; the shipped file's mean ± sd as a star."""
    fig, (ax,) = new_figure()
    for i, g in enumerate(pooled):
        colour = f"C{i}"
        rows = _pool(g.measured(), lambda f: f.tradeoff)
        pts = sorted(((mean_sd([v[0] for _, v in p]), mean_sd([v[1] for _, v in p]), name)
                      for name, p in rows.items()), key=lambda t: t[0][0])
        if pts:
            ax.errorbar([p[0][0] for p in pts], [p[1][0] for p in pts], xerr=[p[0][1] for p in pts],
                        yerr=[p[1][1] for p in pts], marker="o", capsize=3, color=colour,
                        label=f"{group_label(g, first)} (seeds {', '.join(map(str, g.measured()))})")
        for (x, _, _), (y, _, _), name in pts:
            ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
        shipped = [f.shipped for f in g.measured().values() if f.shipped]
        size = [_float(s.get("bytes")) for s in shipped]
        vals = [_float(s.get(metric)) for s in shipped]
        if shipped and None not in size and None not in vals:
            (x, xe, n), (y, ye, _) = mean_sd(size), mean_sd(vals)
            ax.errorbar([x], [y], xerr=[xe], yerr=[ye], marker="*", markersize=14, capsize=3, color=colour,
                        linestyle="none", label=f"shipped, n={n}")
    ax.set_xscale("log")
    ax.set_xlabel("bytes on disk (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs bytes over seeds: mean ± sd")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


# ------------------------------------------------------------------ the command


def collect(root: Path, metric: str) -> tuple[list[Run], list[Group], list[Group]]:
    """(runs, groups, pooled groups) of the project at ``root``; SeedsError when nothing can be pooled."""
    runs = list_runs(root)
    figures = [run_figures(root, r, metric) for r in runs]
    measured = [r for r, f in zip(runs, figures) if f.models or f.shipped or f.tradeoff]
    if not measured:
        raise SeedsError(f"{root}: no run with metrics (no experiments of HEAD, no figures in HEAD or the "
                         f"workspace): run `dvc exp run --queue -S seed=1` and `dvc queue start` first")
    if not any(f.models or f.tradeoff or (f.shipped or {}).get(metric) is not None for f in figures):
        raise SeedsError(f"--metric {metric}: in no run's metrics/<stage>.json, {SUMMARY} (shipped) or {PRUNE_CSV}")
    groups = group_runs(runs, figures)
    pooled = [g for g in groups if len(g.measured()) >= 2]
    if not pooled:
        seen = sorted({str(r.seed) for r in measured})
        raise SeedsError(f"seed: no two runs differ in seed alone ({len(measured)} run(s) with figures, "
                         f"{len(groups)} group(s) of params, seeds {', '.join(seen)}): queue "
                         f"`dvc exp run --queue -S seed=<n>` with the other params unchanged, then `dvc queue start`")
    return runs, groups, pooled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=(
        "Pool the DVC experiments of HEAD that differ in `seed` alone (dvc exp run --queue -S seed=1, then dvc "
        "queue start; the workspace or HEAD run counts too) and write mean ± sd (n) per model, of the shipped "
        "file and of the trade-off, as a markdown table and a chart with error bars."))
    ap.add_argument("--out", default="seeds", metavar="DIR",
                    help="folder for seeds.md and seeds.png (default: seeds)")
    ap.add_argument("--metric", default="test_acc", metavar="KEY",
                    help="the figure to pool: a key of metrics/<stage>.json, of summary.json's shipped section and a "
                         "column of plots/prune.csv (default: test_acc; e.g. test_loss, macs, val_acc)")
    ap.add_argument("--repo", default=".", metavar="DIR", help="the DVC project (default: the current folder)")
    args = ap.parse_args(argv)
    root = Path(args.repo).resolve()
    try:
        runs, groups, pooled = collect(root, args.metric)
    except SeedsError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    text = write_markdown(groups, pooled, runs, args.metric)
    write_text(text, out / "seeds.md")
    wrote = [out / "seeds.md"]
    if any(f.tradeoff or f.shipped for g in pooled for f in g.measured().values()):
        png = png_bytes(tradeoff_chart(pooled, groups[0], args.metric))
        with atomic_path(out / "seeds.png") as tmp:
            tmp.write_bytes(png)
        wrote.append(out / "seeds.png")
    print(text)
    print(f"wrote {', '.join(map(str, wrote))}", file=sys.stderr)
    return 0
