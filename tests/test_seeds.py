"""``shrink seeds``: seed experiments queued the DVC way, pooled into mean ± sd (n); and which files of an
experiment count as its own (``current_outputs``)."""
from __future__ import annotations

import json
import statistics
import sys

import pytest

from conftest import copy_project, dvc, git, run
from shrink.seeds import Figures, Run, current_outputs, group_runs, group_table, tradeoff_chart


def _lock(**stages) -> dict:
    return {"stages": stages}


def test_current_outputs_keeps_only_what_the_runs_seed_wrote():
    prep = {"params": {"params.yaml": {"seed": 1}}, "outs": [{"path": "data", "md5": "d1"}]}
    student = {"params": {"params.yaml": {"seed": 1}}, "deps": [{"path": "data", "md5": "d1"}],
               "outs": [{"path": "metrics/student.json", "md5": "s1"}]}
    # left over from the commit the experiment started from: the seed of the baseline, and the data it read
    teacher = {"params": {"params.yaml": {"seed": 0}}, "deps": [{"path": "data", "md5": "d0"}],
               "outs": [{"path": "models/teacher.pt", "md5": "t0"}]}
    report = {"deps": [{"path": "models/teacher.pt", "md5": "t0"}, {"path": "src/x.py", "md5": "x"}],
              "outs": [{"path": "metrics/summary.json", "md5": "r0"}]}  # reads no seed, but the stale teacher's
    lock = _lock(prepare=prep, student=student, teacher=teacher, evaluate=report)
    assert current_outputs(lock, 1) == ["data", "metrics/student.json"]
    assert current_outputs(lock, 0) == []  # seed 0's prepare did not write this data
    teacher["params"]["params.yaml"]["seed"] = 1
    assert "models/teacher.pt" not in current_outputs(lock, 1)  # the right seed, other data (d0 is not d1)
    teacher["deps"][0]["md5"] = "d1"
    assert current_outputs(lock, 1) == ["data", "metrics/student.json", "models/teacher.pt", "metrics/summary.json"]


def test_runs_pool_by_params_but_seed_and_the_chart_draws_their_sd():
    def figs(acc: float, size: float) -> Figures:
        return Figures({"distill": acc}, {"name": "prune_1.int8w", "bytes": size, "test_acc": acc},
                       {"prune_1.int8w": (size, acc)})

    base = {"params.yaml": {"distill": {"alpha": 0.5}}}
    other = {"params.yaml": {"distill": {"alpha": 0.7}}}
    runs = [Run("a", "r1", 0, base), Run("b", "r2", 1, base), Run("c", "r3", 0, other), Run("d", "r4", 0, base)]
    groups = group_runs(runs, [figs(0.8, 1000), figs(0.9, 3000), figs(0.5, 10), figs(0.1, 1)])
    assert [[r.name for r in g.runs] for g in groups] == [["a", "b", "d"], ["c"]]
    assert list(groups[0].measured()) == [0, 1]  # d repeats seed 0: a's figures are kept
    table = "\n".join(group_table(groups[0], "test_acc"))
    assert "| distill | 0.8500 ± 0.0707 (2) | 0, 1 |" in table
    assert "| prune_1.int8w | 2,000 ± 1,414 (2) | 0.8500 ± 0.0707 (2) |" in table
    assert "seed 0: prune_1.int8w; seed 1: prune_1.int8w" in table
    (ax,) = tradeoff_chart(groups[:1], groups[0], "test_acc").axes
    xerr, yerr = ax.containers[0].lines[2]  # the trade-off's error bars: horizontal, then vertical
    (x0, y0), (x1, _) = xerr.get_segments()[0]
    assert (x0, x1, y0) == pytest.approx((2000 - 1414.2, 2000 + 1414.2, 0.85), abs=0.1)
    assert yerr.get_segments()[0][1][1] - yerr.get_segments()[0][0][1] == pytest.approx(2 * 0.0707, abs=1e-4)


def _stat(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)})"


def _row(table: str, first: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.slow
def test_seeds_pools_queued_seed_experiments(tiny_run, tmp_path):
    """A seed queued up to the student stage on top of the tiny run (seed 0): the student is pooled over two
    seeds; every other figure of the experiment is seed 0's, left from HEAD, and counts once. (Several queued
    points in one queue: test_dvc_workflows' queued sweep.)"""
    proj = copy_project(tiny_run, tmp_path / "proj")
    seeds = [sys.executable, "-m", "shrink.cli", "seeds", "--out", "seeds"]
    alone = run(seeds, proj, check=False)  # HEAD alone: nothing differs in seed
    assert alone.returncode == 1 and alone.stderr.startswith("shrink seeds: error: seed: no two runs differ"), alone
    dvc(proj, "exp", "run", "--queue", "-S", "seed=1", "student")
    dvc(proj, "exp", "run", "--run-all", "-j", "1")

    revs = ["HEAD", *git(proj, "for-each-ref", "--format=%(objectname)", "refs/exps").split()]
    assert len(revs) == 2, revs
    figures = [json.loads(git(proj, "show", f"{rev}:metrics/student.json")) for rev in revs]
    out = run(seeds, proj)
    page = (proj / "seeds/seeds.md").read_text()
    assert out.stdout.strip() == page.strip()
    assert "2 runs" not in page and "3 runs" in page and "1 group(s)" in page  # workspace, HEAD, the experiment
    assert _row(page, "student") == ["student", _stat([f["test_acc"] for f in figures]), "0, 1"]
    teacher = json.loads((proj / "metrics/teacher.json").read_text())["test_acc"]
    assert _row(page, "teacher") == ["teacher", f"{teacher:.4f} (1)", "0"]
    shipped = json.loads((proj / "metrics/summary.json").read_text())["shipped"]
    assert _row(page, "metrics/summary.json")[2:] == [f"{shipped['bytes']:,} (1)", f"seed 0: {shipped['name']}"]
    assert (proj / "seeds/seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run([*seeds, "--metric", "test_loss", "--out", "loss"], proj)
    assert _row((proj / "loss/seeds.md").read_text(), "student")[1] == _stat([f["test_loss"] for f in figures])
