"""``shrink bench``'s throw-away copies of the project and the git / dvc commands run in them.

``--quick`` runs a tiny copy (``tiny_overrides``). The tests' tiny projects are that same copy over images of
their own: they import ``tiny_overrides``, ``copy_pipeline`` and ``init_repo`` from here (the library cannot
import the tests), so "a tiny project" has one definition. ``shrink.bench`` is imported by no stage: editing it
never invalidates a DVC stage.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

# What a copy of the project needs to run its pipeline.
PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "src", "weights", ".dvcignore")


TINY_WIDTHS = ("auto", 0.65, 0.5)  # the tiny projects' prune rounds: the first one's the knee search's pick
TINY_LADDER = [0.9, 0.8]  # what the tiny screen screens: both wider than the next round, which cuts the first


def tiny_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    """Shrink the default params to a pipeline run of seconds: a few hundred 16 px images, one epoch,
    a chain of three pruning rounds (the first one's width the knee search's pick of two), one process per
    stage."""
    raw["data"]["limit"] = 300
    raw["data"]["image_size"] = 16
    for name in ("teacher", "student", "distill"):  # one process: torchrun's start-up would dominate
        raw[name]["train"].update(epochs=1, batch_size=64, nproc=1)
    if "prune" in raw:
        # a chain of three one-epoch rounds, whatever the default's shape (its rounds each cut distill): editing a
        # round then reruns the rounds below it (the late change section 4 times; the tests check it). Not deeper
        # than half: a few hundred images and a few steps per round do not recover a deep cut (the default's
        # rounds fine-tune for 16 epochs)
        names = [f"prune_{i}" for i in range(1, len(TINY_WIDTHS) + 1)]
        raw["prune"]["rounds"] = {n: {"parent": parent, "width": w, "epochs": 1, "after": after}
                                  for n, parent, after, w in zip(names, ["distill", *names], ["control", *names],
                                                                 TINY_WIDTHS)}
        raw["prune"]["finetune"]["train"].update(batch_size=64, nproc=1)
        if isinstance(raw["prune"].get("control"), dict):  # the control: a round's epochs, as in the default
            raw["prune"]["control"]["epochs"] = 1
        if isinstance(raw["prune"].get("search"), dict):
            raw["prune"]["search"].update(ladder=list(TINY_LADDER), epochs=1)
    for key, section in (("quantize", {"calibration_images": 64}), ("evaluate", {"repeats": 5, "warmup": 1})):
        if isinstance(raw.get(key), dict):
            raw[key].update({k: v for k, v in section.items() if k in raw[key]})
    return raw


def bump_last_round(raw: dict[str, Any]) -> str:
    """Add one fine-tuning epoch to the last pruning round; returns a description of the change."""
    rounds = raw["prune"]["rounds"]
    last = list(rounds)[-1]
    before = int(rounds[last]["epochs"])
    rounds[last]["epochs"] = before + 1
    return f"prune.rounds.{last}.epochs {before} -> {before + 1}"


def stages_ran(dvc_output: str) -> list[str]:
    """Names of the stages a ``dvc repro`` output says it ran."""
    return re.findall(r"Running stage '([^']+)'", dvc_output)


# -------------------------------------------------------------- commands in a copy


def project_env(project: Path) -> dict[str, str]:
    """The environment a project copy's stages run in: this venv's python and dvc, the copy's own src."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(project / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command in ``cwd`` (default environment: ``project_env(cwd)``); its stdout, or RuntimeError
    with the whole output."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=env or project_env(cwd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def git(cwd: Path, *args: str) -> str:
    """``git ARGS`` in ``cwd`` with a fixed committer (a copy has no user config)."""
    return run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args], cwd)


def dvc(cwd: Path, *args: str) -> str:
    return run(["dvc", *args], cwd)


def git_commit(project: Path) -> str | None:
    """The short commit of ``project``, marked when the tree has uncommitted changes (None outside git)."""
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty.strip() else "")


# -------------------------------------------------------------- copies


def copy_pipeline(src: Path, dest: Path, edit: Optional[Callable[[dict[str, Any]], Any]] = None) -> None:
    """Copy a project's pipeline files (``PROJECT_FILES``) into a new folder ``dest``, with a ``.gitignore``.

    Args:
        edit: changes the copy's params (params.yaml as a dict, in place), which is then written back as
            plain YAML; None: the file is copied as it is, comments and all.
    """
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif path.exists():
            shutil.copy2(path, dest / name)
    if edit is not None:
        raw = yaml.safe_load((dest / "params.yaml").read_text())
        edit(raw)
        (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (dest / ".gitignore").write_text("__pycache__/\n")


def init_repo(dest: Path, message: str) -> Path:
    """Make ``dest`` a git + DVC repo (analytics off) and commit everything in it."""
    git(dest, "init", "-q", "-b", "main")
    dvc(dest, "init", "-q")
    dvc(dest, "config", "core.analytics", "false")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", message)
    return dest


def make_project_copy(src: Path, dest: Path, quick: bool) -> Path:
    """A new git + DVC repo holding ``src``'s pipeline (tiny params when ``quick``), committed, empty cache."""
    if dest.exists():
        shutil.rmtree(dest)
    root = (yaml.safe_load((src / "params.yaml").read_text()) or {}).get("data", {}).get("root")
    relative = bool(root) and not Path(root).is_absolute()

    def edit(raw: dict[str, Any]) -> None:
        if relative:  # a relative data root means the original project's
            raw["data"]["root"] = str((src / root).resolve())
        if quick:
            tiny_overrides(raw)

    copy_pipeline(src, dest, edit if quick or relative else None)
    return init_repo(dest, "bench copy")


def timed_repro(project: Path, log: Path, label: str) -> tuple[float, list[str]]:
    """Wall time of ``dvc repro`` in ``project`` and the stages it ran; the full output goes to ``log``."""
    print(f"  dvc repro ({label}) ...", flush=True)
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(["dvc", "repro"], cwd=project, env=project_env(project), stdout=subprocess.PIPE,
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


def repro_untimed(project: Path, log: Path) -> None:
    """``dvc repro`` in ``project`` and commit what it wrote."""
    timed_repro(project, log, "setup")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "bench run")


def outputs_stale(project: Path) -> str | None:
    """The stages ``dvc status`` says changed (None when up to date or when it cannot tell)."""
    try:
        proc = subprocess.run(["dvc", "status", "--json"], cwd=project, env=project_env(project),
                              capture_output=True, text=True, timeout=300)
        changed = json.loads(proc.stdout or "{}") if proc.returncode == 0 else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
        return None
    return ", ".join(sorted(changed)) or None
