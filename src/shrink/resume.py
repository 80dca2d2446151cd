"""Resume an interrupted training stage at its last complete epoch, to the same result (docs/resume.md).

At the end of every epoch ``train.fit`` saves a resume state: model, optimiser, scheduler, GradScaler, every
RNG state that shapes the rest of the run (torch's global one per rank, NumPy's, Python's, ``fit``'s batch-order
generator), the epoch, the best-so-far (accuracy, epoch, weights), the history and the dvclive folder's files.
It lives in ``<project>/.shrink/resume/<stage>/state.pt``, a folder that git and DVC ignore: DVC deletes a
stage's outputs before running it, so the state cannot be one of them. The state carries a key, a hash of
everything the stage's result depends on (its resolved params, the contents of every input path on its command
line, the command line, the code it imported, the device and the number of processes); a state with another
key is discarded, never used. A stage that completes removes its state.

Only rank 0 writes (after gathering every rank's torch RNG state); every rank reads the same file, and the
ranks agree on the epoch before any of them uses it. Saving reads RNG states without drawing from them, so a
run that saves states trains exactly as one that does not.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from .distributed import Dist, all_sum
from .io import project_root, save_torch

FORMAT = 1
RESUME_DIR = Path(".shrink") / "resume"  # in the project folder; its parent holds a .gitignore of its own
_PACKAGE = Path(__file__).resolve().parent


@dataclass
class TrainState:
    """What a training run carries from one epoch to the next (``train.fit`` builds it), and what a resume state
    saves of it and puts back (``Resume.save``, ``Resume.restore``)."""

    model: nn.Module  # the inner network, not its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a learning-rate scheduler, or None (a constant rate)
    scaler: Optional[torch.amp.GradScaler]  # fp16 on a GPU only
    gen: torch.Generator  # batch order and augmentation
    epoch: int = 0  # the last complete epoch
    best_acc: float = -1.0  # the best validation accuracy so far, its epoch and weights
    best_epoch: int = 0
    best_state: Optional[dict[str, torch.Tensor]] = None
    history: list[dict[str, float]] = field(default_factory=list)  # one row of figures per epoch


@dataclass(frozen=True)
class Resume:
    """Where one stage keeps its resume state, and the key a usable state must carry."""

    name: str  # the stage's identity in messages (``teacher``, ``prune@prune_1``)
    path: Path
    key: str

    # ------------------------------------------------------------------ load

    def load(self, ctx: Dist) -> Optional[dict[str, Any]]:
        """The saved state if it is readable and has this run's key, else None (after one line saying why;
        rank 0 then deletes it). All ranks get the same answer."""
        state, why = None, None
        if self.path.exists():
            try:
                state = torch.load(self.path, map_location="cpu", weights_only=True)
                if not (isinstance(state, dict) and state.get("format") == FORMAT and _complete(state)):
                    raise ValueError("not a resume state of this version")
            except Exception as e:  # a truncated zip, garbage bytes, a foreign pickle: never a traceback
                state, why = None, f"{self.name}: warning: {self.path}: unreadable resume state " \
                                   f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); starting at epoch 1"
            if state is not None and state["key"] != self.key:
                why = (f"{self.name}: discarded the resume state of epoch {state['epoch']}: this run's params, inputs "
                       f"or code differ; starting at epoch 1")
                state = None
        epoch = state["epoch"] if state is not None else 0
        if ctx.on and all_sum([float(epoch)], ctx)[0] != epoch * ctx.world:
            state, why = None, f"{self.name}: warning: the ranks read different resume states; starting at epoch 1"
        if ctx.is_writer and why:
            print(why, file=sys.stderr, flush=True)
            self.clear()
        return state

    def restore(self, saved: dict[str, Any], state: TrainState, ctx: Dist, live_dir: str | Path | None,
                epochs: int) -> None:
        """Put ``saved`` (what ``load`` returned) back into the run's ``state``, the RNGs and the dvclive folder;
        the run goes on at epoch ``state.epoch + 1``.

        Args:
            live_dir: the dvclive folder to refill (None on ranks that do not log).
            epochs: the run's epoch count, for the message.
        """
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scheduler is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        if state.scaler is not None and saved["scaler"] is not None:
            state.scaler.load_state_dict(saved["scaler"])
        set_rng(saved["rng"], state.gen, ctx)
        if live_dir is not None:
            restore_files(saved["live"], Path(live_dir))
        state.epoch, state.best_acc, state.best_epoch = saved["epoch"], saved["best_acc"], saved["best_epoch"]
        state.best_state, state.history = saved["best_state"], saved["history"]
        nxt = state.epoch + 1
        if ctx.is_writer:
            print(f"{self.name}: resuming at epoch {nxt} of {epochs}" if nxt <= epochs else
                  f"{self.name}: all {epochs} epochs were done before the interruption; finishing", flush=True)

    # ------------------------------------------------------------------ save

    def save(self, state: TrainState, ctx: Dist, live_dir: str | Path | None) -> None:
        """Write ``state`` at the end of its epoch (rank 0, atomically); every rank must call it (RNG gather)."""
        rng = get_rng(state.gen, ctx)
        if not ctx.is_writer:
            return
        saved = {
            "format": FORMAT, "key": self.key, "epoch": state.epoch,
            "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "scaler": state.scaler.state_dict() if state.scaler is not None else None,
            "rng": rng, "best_acc": state.best_acc, "best_epoch": state.best_epoch, "best_state": state.best_state,
            "history": state.history, "live": snapshot_files(Path(live_dir)) if live_dir is not None else {},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_torch(saved, self.path)

    def clear(self) -> None:
        """Remove this stage's state (its folder)."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


def _complete(state: dict) -> bool:
    keys = ("key", "epoch", "model", "optimizer", "scheduler", "scaler", "rng", "best_acc", "best_epoch",
            "best_state", "history", "live")
    return all(k in state for k in keys)


# ------------------------------------------------------------------ RNG states


def get_rng(gen: torch.Generator, ctx: Dist) -> dict[str, Any]:
    """Every RNG state the rest of the run draws from, read without drawing. torch's global state differs per
    rank (``train.seed_rank``), so rank 0 gathers all of them."""
    own = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}
    ranks = [own]
    if ctx.on:
        import torch.distributed as dist

        ranks = [None] * ctx.world
        dist.all_gather_object(ranks, own)
        ranks = [{"torch": r["torch"].cpu(), "cuda": [c.cpu() for c in r["cuda"]]} for r in ranks]
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"ranks": ranks, "gen": gen.get_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def set_rng(rng: dict[str, Any], gen: torch.Generator, ctx: Dist) -> None:
    mine = rng["ranks"][ctx.rank]
    torch.set_rng_state(mine["torch"])
    if mine["cuda"] and torch.cuda.is_available() and len(mine["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(mine["cuda"])
    gen.set_state(rng["gen"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# ------------------------------------------------------------------ the dvclive folder


def snapshot_files(folder: Path) -> dict[str, str]:
    """The text files under ``folder`` (dvclive's metrics.json and .tsv curves), by relative path."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def restore_files(files: dict[str, str], folder: Path) -> None:
    """Make ``folder`` hold exactly ``files`` (DVC deleted it before rerunning the stage)."""
    shutil.rmtree(folder, ignore_errors=True)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


# ------------------------------------------------------------------ the key


def _hash_path(h, path: Path) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b".")
        h.update(f.stat().st_size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)


def run_key(params: Any, argv: list[str], outputs: Iterable[str | Path], ctx: Dist) -> str:
    """Hash of what a stage's result depends on.

    Args:
        params: the resolved params (JSON-able: dicts of plain values).
        argv: the command line (``sys.argv``); every argument naming an existing path that is not one of
            ``outputs`` is an input and its contents are hashed, and ``argv[0]``, the stage script, too.
        ctx: the processes and device (a state of another world or device is not this run's).
    """
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(json.dumps(argv).encode())
    h.update(f"{ctx.world} {ctx.device.type}".encode())
    outs = {Path(o).resolve() for o in outputs if o is not None}
    for arg in argv[1:]:
        p = Path(arg)
        if not arg.startswith("-") and p.exists() and p.resolve() not in outs:
            h.update(arg.encode())
            _hash_path(h, p)
    # the code this stage imported from the package (not all of it: editing evaluate.py keeps a teacher's state)
    code = sorted({Path(m.__file__).resolve() for m in list(sys.modules.values())
                   if getattr(m, "__file__", None) and Path(m.__file__).resolve().is_relative_to(_PACKAGE)})
    for f in [Path(argv[0]).resolve(), *code]:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def for_stage(stage: str, params: Any, outputs: Iterable[str | Path], ctx: Dist) -> Optional[Resume]:
    """The resume state of the stage running now, or None outside a DVC project (library use) or with
    ``SHRINK_RESUME=0``.

    Args:
        stage: the stage's identity, its name in dvc.yaml (``teacher``, ``prune@prune_1``): the messages' first
            word, and the folder's name (``prune-prune_1``: ``@`` and ``/`` become ``-``).
        params: the resolved params of the run.
        outputs: the stage's output paths (not inputs, even when a previous run left them).
    """
    root = project_root(Path.cwd())
    if root is None or os.environ.get("SHRINK_RESUME", "1") == "0":
        return None
    base = root / RESUME_DIR.parent
    base.mkdir(exist_ok=True)
    if not (base / ".gitignore").exists():
        (base / ".gitignore").write_text("*\n")  # never committed, whatever the project's .gitignore says
    folder = root / RESUME_DIR / stage.replace("@", "-").replace("/", "-")
    return Resume(stage, folder / "state.pt", run_key(params, list(sys.argv), outputs, ctx))
