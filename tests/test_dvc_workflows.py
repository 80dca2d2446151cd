"""DVC workflows, proven with real git and dvc commands in temporary repos on the tiny params.

What a newcomer relies on (docs/dvc-workflows.md): only what changed reruns; each stage's deps and
params cover what it reads; identical runs give identical results; experiments and queued sweeps
work; metrics and plots compare runs; a colleague gets the checkpoints through a remote (a folder or
S3) and reproduces nothing; stages write only their declared outs, and a failed stage leaves no
half-written file behind.

Read-only tests use the session's ``tiny_run``; tests that change something work on a copy.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import copy_project, dvc, git, isolate_aws, run

pytestmark = pytest.mark.slow

ROUNDS = ["prune@prune_1", "prune@prune_2", "prune@prune_3"]  # the tiny params keep three rounds
PLANS = [r.replace("prune@", "plan@") for r in ROUNDS]
MIN_ACC = 0.75  # the tiny data has 4 classes: chance is 0.25 (test_pipeline_e2e.py)
QUEUE_TIMEOUT = 900  # seconds for a two-point queued sweep of the distill stage


# ------------------------------------------------------------------ helpers


def ran_stages(output: str) -> list[str]:
    """Stages a `dvc repro` / `dvc exp run` actually ran, in order."""
    return re.findall(r"Running stage '([^']+)'", output)


def read_lock(proj: Path) -> dict:
    return yaml.safe_load((proj / "dvc.lock").read_text())["stages"]


def set_param(proj: Path, dotted: str, value) -> None:
    params = yaml.safe_load((proj / "params.yaml").read_text())
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    assert last in node, f"params.yaml has no {dotted}"
    node[last] = value
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def status(proj: Path) -> dict:
    return json.loads(dvc(proj, "status", "--json").stdout)


def descendants(lock: dict, stage: str) -> list[str]:
    """Stages downstream of ``stage`` (their deps include its outs, transitively), in lock order."""
    def outs(name):
        return [o["path"] for o in lock[name].get("outs", [])]

    def reads(name, paths):  # a dep on the out itself, on a file inside it, or on a folder holding it
        return any(d == p or d.startswith(p + "/") or p.startswith(d + "/")
                   for d in (dep["path"] for dep in lock[name].get("deps", [])) for p in paths)

    found, frontier = [], outs(stage)
    changed = True
    while changed:
        changed = False
        for name in lock:
            if name != stage and name not in found and reads(name, frontier):
                found.append(name)
                frontier = frontier + outs(name)
                changed = True
    return [name for name in lock if name in found]


def assert_ran_in_dependency_order(ran: list[str], lock: dict) -> None:
    for i, stage in enumerate(ran):
        early = set(ran[:i]) & set(descendants(lock, stage))
        assert not early, f"{stage} ran after its descendants {sorted(early)}: {ran}"


def is_timing(key: str) -> bool:
    """Keys that measure time, so are not deterministic: wall time, latency and the speed ratios made of it."""
    return key == "wall_seconds" or key.startswith(("latency", "speedup")) or key.endswith(("_seconds", "_ms"))


def drop_timing(obj):
    if isinstance(obj, dict):
        return {k: drop_timing(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [drop_timing(v) for v in obj]
    return obj


def tree_files(proj: Path, folder: str) -> dict[str, str]:
    root = proj / folder
    return {str(p.relative_to(proj)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def metrics_data(proj: Path) -> dict:
    """`dvc metrics show --json` of the workspace, without the revision name."""
    (rev,) = json.loads(dvc(proj, "metrics", "show", "--json").stdout).values()
    assert "error" not in rev, rev
    return rev["data"]


def experiments(proj: Path) -> dict[str, dict]:
    """Experiments listed by `dvc exp show --json`: name -> {"params": ..., "metrics": ...}."""
    found = {}
    for baseline in json.loads(dvc(proj, "exp", "show", "--json").stdout):
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                if rev.get("name") and rev.get("data"):
                    found[rev["name"]] = {
                        "params": rev["data"]["params"]["params.yaml"]["data"],
                        "metrics": {f: m.get("data", {}) for f, m in (rev["data"].get("metrics") or {}).items()},
                    }
    return found


def stage_script(cmd: str) -> str:
    m = re.search(r"\bpython (stages/\w+\.py)", cmd)
    assert m, f"stage command does not run a stages/*.py script: {cmd}"
    return m.group(1)


# ------------------------------------------------------------------ shared runs


@pytest.fixture(scope="module")
def round_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with one round's param changed (`prune.rounds.prune_2.epochs`), run as a
    `dvc exp run` (baseline committed): one run serves the rerun, experiment, metrics-diff and plots tests. A round
    rather than distill: the same mechanism (a param reruns its stage and what depends on it, nothing else) at a
    third of the cost (distill's descendants are every later stage)."""
    proj = copy_project(tiny_run, tmp_path_factory.mktemp("round") / "proj")
    before = read_lock(proj)
    set_param(proj, "prune.rounds.prune_2.epochs", 2)
    changed, told = status(proj), dvc(proj, "status").stdout
    t0 = time.perf_counter()
    out = dvc(proj, "exp", "run").stdout  # the workspace's params change is the experiment's
    return SimpleNamespace(proj=proj, status=changed, told=told, ran=ran_stages(out),
                           seconds=time.perf_counter() - t0, lock_before=before, lock_after=read_lock(proj), stdout=out)


@pytest.fixture(scope="module")
def second_run(tiny_run, tmp_path_factory):
    """The tiny run's stages rerun from scratch (`dvc repro -f -s`) in a copy: the first stage of each kind (each
    stage script: prepare, teacher, ..., plan@prune_1, prune@prune_1, quantize@distill, quantize-round@prune_1), not
    the later ones of a kind (the same code on other inputs), nor evaluate, whose latency figures (and the shipped
    choice they steer) are not meant to repeat."""
    proj = copy_project(tiny_run, tmp_path_factory.mktemp("second") / "proj")
    kinds = {}
    for s in read_lock(proj):
        kinds.setdefault(s.split("@")[0], s)
    stages = [s for s in kinds.values() if s != "evaluate"]
    assert {"prune@prune_1", "quantize-round@prune_1", "scratch@prune_1"} <= set(stages), stages
    ran = ran_stages(dvc(proj, "repro", "-f", "-s", *stages).stdout)
    assert ran == stages
    return proj


# ------------------------------------------------------------------ 1. only what changed reruns


def test_repro_after_a_full_run_does_nothing(tiny_run):
    assert status(tiny_run) == {}
    out = dvc(tiny_run, "repro").stdout
    assert ran_stages(out) == []
    stages = list(read_lock(tiny_run))
    assert {"prepare", "teacher", "student", "distill", *ROUNDS} <= set(stages)
    assert all(f"Stage '{s}' didn't change, skipping" in out for s in stages)


def test_a_round_param_reruns_that_round_and_what_reads_it_only(round_run):
    """A round's own param reruns its plan (cheap, no training), that round and what reads its result (the next
    round's plan, the rounds below it, quantize, evaluate); not the knee search's screen, and not prune_1 or its
    plan. `dvc status` compares each stage's own deps with dvc.lock: it names the stages declaring the param, not
    the ones that depend on models/prune_2.pt, which changes only once the round has rerun."""
    r = round_run
    before = r.lock_before
    downstream = descendants(before, "prune@prune_2")
    assert {"screen", "control", *PLANS, *ROUNDS} <= set(descendants(before, "distill"))  # the knee search's stages
    for stage in ("plan@prune_2", "prune@prune_2"):
        assert r.status[stage] == [{"changed deps": {"params.yaml": {"prune.rounds.prune_2": "modified"}}}], stage
    assert set(r.status) <= {"prune@prune_2", "plan@prune_2", *downstream}
    assert "prune@prune_2" in r.told
    assert r.ran[:2] == ["plan@prune_2", "prune@prune_2"] and "plan@prune_3" in downstream
    assert sorted(r.ran) == sorted(["plan@prune_2", "prune@prune_2", *downstream])
    assert_ran_in_dependency_order(r.ran, before)
    for stage in set(before) - set(r.ran):
        assert r.lock_after[stage] == before[stage], f"{stage} was touched"
    assert {"prepare", "teacher", "student", "distill", "screen", "control", "plan@prune_1",
            "prune@prune_1"} <= set(before) - set(r.ran)
    assert r.lock_after["prune@prune_2"]["params"]["params.yaml"]["prune.rounds.prune_2"]["epochs"] == 2
    assert json.loads((r.proj / "models/prune_2.run.json").read_text())["epochs"] == 2
    assert status(r.proj) == {}
    print(f"dvc exp run after a round's param: {len(r.ran)} stages, {r.seconds:.0f} s")


# ------------------------------------------------------------------ 1b. deps and params say what a stage reads


def module_file(src: Path, name: str) -> Path:
    parts = name.split(".")
    pkg = src.joinpath(*parts, "__init__.py")
    return pkg if pkg.is_file() else src.joinpath(*parts).with_suffix(".py")


def shrink_imports(path: Path, src: Path) -> set[str]:
    """`shrink` modules one file imports, anywhere in it (lazy imports in functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1, f"{path}: relative import beyond the flat package"
                base = "shrink" + (f".{node.module}" if node.module else "")
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names if module_file(src, f"{base}.{a.name}").is_file()]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # importlib.import_module("shrink.x")
            names = [node.value] if re.fullmatch(r"shrink(\.\w+)+", node.value) else []
        for name in names:
            if name == "shrink" or name.startswith("shrink."):
                parts = name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # a submodule imports its package
    return {m for m in found if module_file(src, m).is_file()}


def import_closure(script: Path, src: Path) -> set[str]:
    todo, seen = shrink_imports(script, src), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= shrink_imports(module_file(src, name), src) - seen
    return seen


def is_metadata_only(init: Path) -> bool:
    """A package __init__ with nothing but a docstring and constant assignments (e.g. __version__)."""
    for node in ast.parse(init.read_text()).body:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        constant = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        if not (docstring or constant):
            return False
    return True


RUNTIME_IMPORTS = r"""
import json, os, runpy, sys
out, scripts = sys.argv[1], sys.argv[2:]
found = {}
for script in scripts:
    for m in [m for m in sys.modules if m == "shrink" or m.startswith("shrink.")]:
        del sys.modules[m]  # so every script imports its whole graph again
    sys.argv, sys.path[0] = [script, "--help"], os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    found[script] = {m: getattr(sys.modules[m], "__file__", None) for m in sys.modules
                     if m == "shrink" or m.startswith("shrink.")}
json.dump(found, open(out, "w"))
"""


@pytest.fixture(scope="module")
def runtime_imports(tiny_run, tmp_path_factory):
    """`shrink` modules each stage script really imports (run with --help in the project): script -> {module: file}."""
    scripts = sorted({stage_script(s["cmd"]) for s in read_lock(tiny_run).values()})
    out = tmp_path_factory.mktemp("imports") / "imports.json"
    run([sys.executable, "-c", RUNTIME_IMPORTS, str(out), *scripts], tiny_run)
    return json.loads(out.read_text())


def test_stage_deps_cover_the_src_modules_they_import(tiny_run, runtime_imports):
    src = tiny_run / "src"
    init = src / "shrink/__init__.py"
    lock = read_lock(tiny_run)
    stage_list = dvc(tiny_run, "stage", "list", "--name-only").stdout.split()
    assert sorted(stage_list) == sorted(lock)  # dvc.lock (in the order the stages ran) and dvc's own view of
    # dvc.yaml (foreach resolved) agree
    assert {"prepare", "teacher", "student", "distill", *ROUNDS} <= set(stage_list)
    for name, stage in lock.items():
        script = stage_script(stage["cmd"])
        deps = {d["path"] for d in stage["deps"]}
        assert script in deps, f"{name}: its script {script} is not a dep"
        static = import_closure(tiny_run / script, src)
        runtime = set(runtime_imports[script])
        assert runtime, f"{name}: {script} imports nothing from shrink?"
        assert runtime <= static, f"{name}: the import scan missed {sorted(runtime - static)}"
        needed = {str(module_file(src, m).relative_to(tiny_run)) for m in static}
        if is_metadata_only(init):  # imported by every stage, but holds no code that could change a result
            needed.discard("src/shrink/__init__.py")
        assert needed <= deps, f"{name}: imports {sorted(needed - deps)} but they are not in its deps"
    # the scan finds what it should: distill's loss and the prune hook are imported by distill
    assert {"shrink.distill", "shrink.prune", "shrink.train"} <= import_closure(tiny_run / "stages/distill.py", src)


def test_stages_import_the_src_they_depend_on(tiny_run):
    """The `shrink` code a stage command runs is the project's own src/ (the files its deps hash)."""
    cmd = read_lock(tiny_run)["prepare"]["cmd"] + " --help"
    proc = subprocess.run(cmd, shell=True, cwd=tiny_run, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONVERBOSE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(re.findall(r"(?:code object from |matches )'?(\S+?/shrink/\w+\.py)", proc.stderr))
    assert loaded, "no shrink module in the verbose import log"
    outside = sorted(p for p in loaded if not Path(p).resolve().is_relative_to((tiny_run / "src").resolve()))
    assert not outside, f"stage imported shrink from outside the project: {outside}"


def lookup(params: dict, dotted: str):
    node = params
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, f"params.yaml has no {dotted}"
        node = node[key]
    return node


def declared_reads(script: Path) -> list[str]:
    """The ``reads=`` a stage script declares to ``shrink.stage.stage`` (a literal tuple of params keys)."""
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "stage":
            (reads,) = [k.value for k in node.keywords if k.arg == "reads"]
            return list(ast.literal_eval(reads))
    raise AssertionError(f"{script}: no stage(...) call")


def test_stage_params_name_what_the_stage_reads(tiny_run):
    """Each stage's params: in dvc.yaml is exactly the reads= it declares; shrink.stage enforces the sections."""
    params = yaml.safe_load((tiny_run / "params.yaml").read_text())
    lock = read_lock(tiny_run)
    rounds = list(params["prune"]["rounds"])
    assert [s for s in lock if s.startswith("prune@")] == [f"prune@{r}" for r in rounds]
    for name, stage in lock.items():
        declared = list(stage["params"]["params.yaml"])
        for key in declared:
            lookup(params, key)  # every declared name exists in params.yaml
        reads = declared_reads(tiny_run / stage_script(stage["cmd"]))
        if name.startswith(("prune@", "plan@", "scratch@")):
            key = name.split("@", 1)[1]
            reads = [r.format(round=key) for r in reads]
            # per round: a round's stage depends on its own entry only, so editing one round reruns no earlier one
            assert [k for k in declared if k.startswith("prune.rounds")] == [f"prune.rounds.{key}"]
            assert f"--round {key}" in stage["cmd"]
        assert sorted(declared) == sorted(reads), f"{name}: dvc.yaml declares {declared}, the stage reads {reads}"


# ------------------------------------------------------------------ 2. determinism on the CPU


EVALUATE_OUTS = ("metrics/summary.json", "metrics/evaluate.json", "metrics/latency.json", "plots/", "report.md",
                 "predictions.csv", "charts/", "shipped/")


def test_identical_runs_give_identical_metrics_and_weights(tiny_run, second_run):
    """Exact: both runs are the same computation on the same path (this machine, its env, the same params,
    batches, threads and process counts), so the same kernels in the same order, bit for bit."""
    compared = 0
    for folder in ("metrics", "dvclive"):
        a, b = tree_files(tiny_run, folder), tree_files(second_run, folder)
        assert sorted(a) == sorted(b)
        for path in a:
            if path.startswith(EVALUATE_OUTS):  # not rerun (second_run's doc)
                continue
            compared += 1
            if path.endswith(".json"):
                assert drop_timing(json.loads(a[path])) == drop_timing(json.loads(b[path])), path
            else:
                assert a[path] == b[path], path
    assert compared >= 10
    for path in sorted((tiny_run / "models").glob("*.pt")):
        a = torch.load(path, weights_only=True)
        b = torch.load(second_run / "models" / path.name, weights_only=True)
        assert a["state_dict"].keys() == b["state_dict"].keys()
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), path.name
        assert a["params"] == b["params"]


def test_identical_runs_give_identical_cached_outputs(tiny_run, second_run):
    def hashes(proj):
        return {o["path"]: o["md5"] for n, s in read_lock(proj).items() if n != "evaluate" for o in s.get("outs", [])}

    a, b = hashes(tiny_run), hashes(second_run)
    assert a.keys() == b.keys() and len(a) > 20
    assert a["data/prepared"] == b["data/prepared"]
    # report.md holds the latency table and charts/latency.png draws it, so they are timing like metrics/latency.json;
    # models/<name>.run.json holds the stage's seconds; plots/latency.csv is the timings as a plot
    timing = ("report.md", "charts/latency.png", "plots/latency.csv")
    differ = sorted(p for p in a if a[p] != b[p] and not p.startswith(("metrics/", "dvclive/")) and p not in timing
                    and not p.endswith(".run.json"))
    assert not differ, f"same params, different bytes: {differ}"


def test_another_seed_gives_other_results(tiny_run, tmp_path):
    proj = copy_project(tiny_run, tmp_path / "proj")
    set_param(proj, "seed", 1)
    assert ran_stages(dvc(proj, "repro", "prepare", "student").stdout) == ["prepare", "student"]
    # accuracies near 1 may well coincide: the weights and the loss curve may not
    old, new = (torch.load(p / "models/student.pt", weights_only=True)["state_dict"] for p in (tiny_run, proj))
    assert not all(torch.equal(old[k], new[k]) for k in old)
    old, new = ((p / "dvclive/student/plots/metrics/train/loss.tsv").read_text() for p in (tiny_run, proj))
    assert old != new
    old, new = ({o["path"]: o["md5"] for o in read_lock(p)["prepare"]["outs"]} for p in (tiny_run, proj))
    assert old["data/prepared"] != new["data/prepared"]  # the seed also draws the val/test halves


# ------------------------------------------------------------------ 3. experiments


def test_exp_run_with_a_param_is_listed_with_params_and_metrics(round_run):
    r = round_run
    (name,) = re.findall(r"Ran experiment\(s\): (\S+)", r.stdout)
    exp = experiments(r.proj)[name]
    assert exp["params"]["prune"]["rounds"]["prune_2"]["epochs"] == 2
    assert exp["params"]["prune"]["rounds"]["prune_3"]["epochs"] == 1
    round_2 = exp["metrics"]["metrics/prune/prune_2.json"]
    assert round_2["test_acc"] >= MIN_ACC and round_2["macs"] > 0
    # the results are applied to the workspace too
    assert json.loads((r.proj / "models/prune_2.run.json").read_text())["epochs"] == 2


def queue_table(proj: Path) -> dict[str, str]:
    """`dvc queue status` as experiment name -> state."""
    rows = {}
    for line in dvc(proj, "queue", "status").stdout.splitlines():
        m = re.match(r"^\s*[0-9a-f]{7}\s+(\S+)\s+.*\s(Queued|Running|Success|Failed)\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def dvc_processes_in(proj: Path) -> list[int]:
    """Live dvc processes (queue workers) whose working directory is ``proj``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "dvc" in cmdline and Path(os.readlink(entry / "cwd")) == proj.resolve():
                pids.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def stop_queue(proj: Path) -> None:
    """`dvc queue stop`, then make sure this project's workers are gone (by pid, bounded waits)."""
    dvc(proj, "queue", "stop", check=False)
    deadline = time.monotonic() + 60
    while dvc_processes_in(proj) and time.monotonic() < deadline:
        time.sleep(1)
    for sig in (15, 9):
        for pid in dvc_processes_in(proj):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)
    assert not dvc_processes_in(proj), "queue workers still running"


def test_queued_sweep_runs_every_point(tiny_run, tmp_path):
    proj = copy_project(tiny_run, tmp_path / "proj")
    names = {}
    for alpha in ("0.3", "0.7"):
        out = dvc(proj, "exp", "run", "--queue", "-S", f"distill.alpha={alpha}", "distill").stdout
        (names[alpha],) = re.findall(r"Queued experiment '([^']+)'", out)
    assert queue_table(proj) == {n: "Queued" for n in names.values()}
    try:
        t0 = time.perf_counter()
        dvc(proj, "queue", "start", "-j", "1")
        deadline = time.monotonic() + QUEUE_TIMEOUT
        while set(queue_table(proj).values()) & {"Queued", "Running"}:
            assert time.monotonic() < deadline, f"queue not done after {QUEUE_TIMEOUT} s: {queue_table(proj)}"
            time.sleep(2)
        seconds = time.perf_counter() - t0
        assert queue_table(proj) == {n: "Success" for n in names.values()}
    finally:
        stop_queue(proj)
    log = dvc(proj, "queue", "logs", names["0.3"]).stdout
    assert ran_stages(log) == ["distill"]  # the target stops the sweep at distill
    exps = experiments(proj)
    for alpha, name in names.items():
        assert exps[name]["params"]["distill"]["alpha"] == float(alpha)
        distill = exps[name]["metrics"]["metrics/distill.json"]
        assert distill["test_acc"] >= MIN_ACC
    table = dvc(proj, "exp", "show", "--only-changed").stdout
    assert all(name in table for name in names.values())
    dvc(proj, "exp", "apply", names["0.3"])  # bring one point's params, metrics and checkpoint into the workspace
    assert yaml.safe_load((proj / "params.yaml").read_text())["distill"]["alpha"] == 0.3
    assert json.loads((proj / "models/distill.run.json").read_text())["alpha"] == 0.3
    assert torch.load(proj / "models/distill.pt", weights_only=True)["params"]["distill"]["alpha"] == 0.3
    print(f"queued sweep, 2 x distill: {seconds:.0f} s")


# ------------------------------------------------------------------ 4. metrics and plots


def test_metrics_are_declared_at_the_top_level(tiny_run):
    spec = yaml.safe_load((tiny_run / "dvc.yaml").read_text())
    for name, stage in spec["stages"].items():
        for body in (stage, stage.get("do") or {}):
            assert "metrics" not in body and "plots" not in body, f"stage {name} declares metrics/plots"
    declared = spec["metrics"]
    assert declared and spec["plots"]
    # plain outputs that live in metrics/ but are not metrics: every row, the timings, the artifacts' bytes
    plain = {"metrics/evaluate.json", "metrics/latency.json"}
    written = sorted(str(p.relative_to(tiny_run)) for p in (tiny_run / "metrics").rglob("*.json")
                     if str(p.relative_to(tiny_run)) not in plain and p.parent.name != "quantize")
    assert {f"metrics/{s}.json" for s in ("prepare", "teacher", "student", "distill")} <= set(written)
    assert {f"metrics/prune/{r.split('@')[1]}.json" for r in ROUNDS} <= set(written)
    for path in written:
        assert any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared), f"{path} is not declared"
    assert sorted(metrics_data(tiny_run)) == written


def test_metrics_diff_names_the_changed_figures(round_run):
    proj = round_run.proj
    table = dvc(proj, "metrics", "diff").stdout
    diff = json.loads(dvc(proj, "metrics", "diff", "--json").stdout)
    assert "test_loss" in diff["metrics/prune/prune_2.json"], diff  # the round retrained for 2 epochs
    assert re.search(r"metrics/prune/prune_2\.json\s+test_loss\s", table), table
    untouched = {f"metrics/{m}.json" for m in ("prepare", "teacher", "student", "distill", "prune/prune_1")}
    assert not untouched & set(diff), "stages that did not rerun show changed metrics"
    assert not [k for figures in diff.values() for k in figures if is_timing(k.split(".")[-1])], diff
    some = dvc(proj, "metrics", "diff", "--targets", "metrics/prune/prune_2.json", "metrics/summary.json").stdout
    assert "metrics/prune/prune_2.json" in some and "metrics/latency.json" not in some


def vega_spec(html: str, title: str) -> dict:
    specs = [json.loads(s) for s in re.findall(r"var spec = (\{.*?\});\n", html)]
    (spec,) = [s for s in specs if s.get("title", {}).get("text") == title]
    return spec


def test_plots_render_the_training_curves(round_run):
    proj = round_run.proj
    dvc(proj, "plots", "show", "-o", "dvc_plots")
    spec = vega_spec((proj / "dvc_plots/index.html").read_text(), "training curves (val accuracy)")
    points = {(v["filename"], v["rev"]): float(v["acc"]) for v in spec["data"]["values"]}
    for stage in ("teacher", "student", "distill"):
        tsv = (proj / f"dvclive/{stage}/plots/metrics/val/acc.tsv").read_text().splitlines()
        assert tsv[0] == "step\tacc"
        assert points[(f"{stage}/plots/metrics/val/acc.tsv", "workspace")] == float(tsv[-1].split("\t")[1])
    dvc(proj, "plots", "diff", "-o", "dvc_plots_diff")
    spec = vega_spec((proj / "dvc_plots_diff/index.html").read_text(), "training curves (val accuracy)")
    assert {v["rev"] for v in spec["data"]["values"]} == {"HEAD", "workspace"}


# ------------------------------------------------------------------ 5. sharing through a remote


def clone_and_pull(origin: Path, dest: Path, configure=None) -> None:
    """A colleague's side: git clone, (configure credentials), dvc pull; then nothing to reproduce."""
    git(dest.parent, "clone", "-q", str(origin), str(dest))
    assert not (dest / "models/distill.pt").exists() and not (dest / ".dvc/cache").exists()
    if configure:
        configure(dest)
    dvc(dest, "pull")
    assert (dest / "models/prune_3.pt").is_file() and (dest / "data/prepared/meta.json").is_file()
    assert status(dest) == {}
    assert "Data and pipelines are up to date." in dvc(dest, "status").stdout
    assert ran_stages(dvc(dest, "repro").stdout) == []
    assert metrics_data(dest) == metrics_data(origin)
    assert "metrics/distill.json" in dvc(dest, "metrics", "show").stdout
    assert git(dest, "status", "--porcelain") == ""


def test_checkpoints_round_trip_through_a_local_folder_remote(tiny_run, tmp_path):
    proj = copy_project(tiny_run, tmp_path / "proj")
    store = tmp_path / "dvc-store"
    dvc(proj, "remote", "add", "-d", "local", str(store))
    git(proj, "add", ".dvc/config")
    git(proj, "commit", "-qm", "dvc remote")
    dvc(proj, "push")
    assert len(list((store / "files/md5").rglob("*"))) > 10
    assert json.loads(dvc(proj, "status", "--cloud", "--json").stdout) == {}
    assert "Cache and remote 'local' are in sync." in dvc(proj, "status", "--cloud").stdout
    clone_and_pull(proj, tmp_path / "colleague")


def test_checkpoints_round_trip_through_s3(tiny_run, tmp_path, s3_endpoint, monkeypatch):
    import boto3

    isolate_aws(monkeypatch, tmp_path)  # only the dummy keys below may reach the server
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="shrink-dvc")

    def configure(proj: Path) -> None:
        dvc(proj, "remote", "modify", "--local", "s3", "endpointurl", s3_endpoint)
        dvc(proj, "remote", "modify", "--local", "s3", "access_key_id", "testing")
        dvc(proj, "remote", "modify", "--local", "s3", "secret_access_key", "testing")

    proj = copy_project(tiny_run, tmp_path / "proj")
    dvc(proj, "remote", "add", "-d", "s3", "s3://shrink-dvc/cache")
    configure(proj)
    committed = (proj / ".dvc/config").read_text()
    assert "s3://shrink-dvc/cache" in committed
    assert not re.search(r"access_key|secret|testing|endpointurl|127\.0\.0\.1", committed), committed
    assert "secret_access_key = testing" in (proj / ".dvc/config.local").read_text()
    run(["git", "check-ignore", "-q", ".dvc/config.local"], proj)
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "s3 remote")
    assert ".dvc/config.local" not in git(proj, "ls-files", ".dvc").split()
    dvc(proj, "push")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="shrink-dvc")["Contents"]]
    assert len(keys) > 10 and all(k.startswith("cache/files/md5/") for k in keys)
    assert json.loads(dvc(proj, "status", "--cloud", "--json").stdout) == {}
    assert "Cache and remote 's3' are in sync." in dvc(proj, "status", "--cloud").stdout
    clone_and_pull(proj, tmp_path / "colleague", configure)


# ------------------------------------------------------------------ 6. outputs are safe to cache


def test_a_run_writes_only_its_declared_outputs(tiny_run):
    before = set(git(tiny_run, "ls-tree", "-r", "--name-only", "HEAD~1").split())  # the project, before the run
    outs = [o["path"] for s in read_lock(tiny_run).values() for o in s.get("outs", [])]
    assert all((tiny_run / o).exists() for o in outs)
    files = {str(p.relative_to(tiny_run)) for p in tiny_run.rglob("*")
             if p.is_file() and p.relative_to(tiny_run).parts[0] not in (".git", ".dvc")}
    created = files - before
    assert created
    stray = sorted(
        f for f in created
        if f != "dvc.lock" and Path(f).name != ".gitignore"
        and not any(f == o or f.startswith(o + "/") for o in outs)
        and not (f.startswith("src/") and "/__pycache__/" in f)  # bytecode, git-ignored
    )
    assert not stray, f"written outside the declared outs: {stray}"
    assert not [p for p in tiny_run.rglob("*.tmp") if ".git" not in p.parts]


def assert_failed_cleanly(proj: Path, proc: subprocess.CompletedProcess, stage: str, key: str, lock_before: dict):
    assert proc.returncode != 0, proc.stdout
    assert f"failed to reproduce '{stage}'" in proc.stderr
    for out in (f"models/{key}.pt", f"models/{key}.summary.txt", f"metrics/prune/{key}.json"):
        assert not (proj / out).exists(), f"{out} left by a failed run"
    assert not [p for p in proj.rglob("*.tmp") if ".git" not in p.parts], "temporary file left behind"
    assert read_lock(proj) == lock_before  # nothing of the failed run is recorded
    assert stage in status(proj)  # and the next repro reruns it


def test_a_stage_failing_after_training_started_leaves_no_output(tiny_run, tmp_path, monkeypatch):
    proj = copy_project(tiny_run, tmp_path / "proj")
    lock = read_lock(proj)
    fail_nth_save(tmp_path, monkeypatch, 0, "stages/prune.py")  # no save fails ...
    monkeypatch.setenv("SHRINK_TEST_FAIL_EVAL", "2")  # ... but the 2nd validation (1st: right after the cut) does
    proc = dvc(proj, "repro", "-f", "-s", "prune@prune_1", check=False)
    assert "validation failed (injected by the test)" in proc.stderr
    assert re.search(r"in fit\b", proc.stderr)  # inside training: the epoch ran, its validation failed
    assert_failed_cleanly(proj, proc, "prune@prune_1", "prune_1", lock)
    assert (proj / "models/prune_2.pt").is_file()  # other stages' outputs stay


SITECUSTOMIZE = '''
"""Test fault injection: the Nth torch.save of a stage script writes half its bytes, then fails."""
import os, sys
_n = os.environ.get("SHRINK_TEST_FAIL_SAVE")
if _n and sys.argv and sys.argv[0].endswith(os.environ["SHRINK_TEST_FAIL_SCRIPT"]):
    import io, torch
    _real, _calls = torch.save, [0]

    def _save(obj, f, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] != int(_n):
            return _real(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        _real(obj, buf, *args, **kwargs)
        half = buf.getvalue()[: len(buf.getvalue()) // 2]
        if hasattr(f, "write"):  # a file object (how shrink.io writes checkpoints)
            f.write(half)
            f.flush()
        else:
            with open(f, "wb") as out:
                out.write(half)
        raise OSError(28, "No space left on device (injected by the test)")

    torch.save = _save
    if os.environ.get("SHRINK_TEST_FAIL_EVAL"):  # a fault inside training: the Nth validation raises
        import shrink.train
        _real_eval, _evals = shrink.train.loss_and_accuracy, [0]

        def _evaluate(*args, **kwargs):
            _evals[0] += 1
            if _evals[0] == int(os.environ["SHRINK_TEST_FAIL_EVAL"]):
                raise RuntimeError("validation failed (injected by the test)")
            return _real_eval(*args, **kwargs)

        shrink.train.loss_and_accuracy = _evaluate
'''


def fail_nth_save(tmp_path: Path, monkeypatch, n: int, script: str) -> None:
    """Make the stages' `python` fail its nth torch.save, whatever PYTHONPATH the stage command sets."""
    site, bin_dir = tmp_path / "inject/site", tmp_path / "inject/bin"
    site.mkdir(parents=True)
    bin_dir.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}"\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SHRINK_TEST_FAIL_SAVE", str(n))
    monkeypatch.setenv("SHRINK_TEST_FAIL_SCRIPT", script)


def test_a_checkpoint_write_failing_midway_leaves_no_partial_file(tiny_run, tmp_path, monkeypatch):
    proj = copy_project(tiny_run, tmp_path / "proj")
    lock = read_lock(proj)
    fail_nth_save(tmp_path, monkeypatch, 1, "stages/prune.py")  # the first save is the checkpoint
    proc = dvc(proj, "repro", "-f", "-s", "prune@prune_1", check=False)
    assert "no space left on the device" in proc.stderr  # the injected ENOSPC, reported as one error line
    assert "prune prune_1 epoch 1/1" in proc.stdout  # training ran; the failure is in the write
    assert_failed_cleanly(proj, proc, "prune@prune_1", "prune_1", lock)


def test_a_stage_failing_after_its_checkpoint_leaves_no_stray_file(tiny_run, tmp_path, monkeypatch):
    proj = copy_project(tiny_run, tmp_path / "proj")
    fail_nth_save(tmp_path, monkeypatch, 2, "stages/prune.py")  # the second save: the in-memory size probe
    proc = dvc(proj, "repro", "-f", "-s", "prune@prune_1", check=False)
    assert proc.returncode != 0 and "no space left on the device" in proc.stderr
    untracked = git(proj, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert not [line for line in untracked if line.startswith("??")], untracked
