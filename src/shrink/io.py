"""Atomic file writes: a stage either leaves a complete output or none, so DVC never caches a torn file.

Temporary files live in ONE project-level folder, ``<project>/.shrink-tmp/`` (the folder holding
``dvc.yaml``; same filesystem, so the final rename is atomic), never inside an output folder another
stage depends on. Each temp name starts with its writer's PID; temps of writers that no longer run
(killed with ``kill -9``, power loss) are deleted by the next writer. The folder ignores itself for git.
Outside a DVC project (library use) temps go beside the target, named ``.<pid>-<name>-*.tmp``, and are
swept the same way.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import torch


_UMASK = os.umask(0)
os.umask(_UMASK)
TMP_DIR_NAME = ".shrink-tmp"
_swept: set[Path] = set()


def project_root(folder: Path) -> Path | None:
    """The DVC project ``folder`` is in (the nearest folder up holding ``dvc.yaml`` or ``.dvc/``), or None."""
    for d in (folder, *folder.parents):
        if (d / "dvc.yaml").is_file() or (d / ".dvc").is_dir():
            return d
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(folder: Path) -> list[Path]:
    """Delete temps in ``folder`` whose writer process is gone; returns what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            name = entry.name.lstrip(".")
            pid, sep, rest = name.partition("-")
            if not (sep and pid.isdigit() and rest.endswith(".tmp")) or _pid_alive(int(pid)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
    return removed


def tmp_dir_for(path: str | os.PathLike) -> tuple[Path, str]:
    """(folder, name prefix) for temps of ``path``: ``<project>/.shrink-tmp`` when ``path`` is in a DVC
    project on the same filesystem, else ``path``'s own folder with a hidden name."""
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    folder, prefix = target.parent, "."
    root = project_root(target.parent)
    if root is not None:
        tmp = root / TMP_DIR_NAME
        tmp.mkdir(exist_ok=True)
        if not (tmp / ".gitignore").exists():
            (tmp / ".gitignore").write_text("*\n")  # never committed, whatever the project's .gitignore says
        if os.stat(tmp).st_dev == os.stat(target.parent).st_dev:
            folder, prefix = tmp, ""
    if folder not in _swept:
        _swept.add(folder)
        sweep_stale(folder)
    return folder, f"{prefix}{os.getpid()}-{target.name}-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    folder, prefix = tmp_dir_for(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs should look like any other
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; it replaces the folder ``path`` only if the block succeeds."""
    path = Path(path)
    folder, prefix = tmp_dir_for(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=folder))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=folder))
            os.replace(path, old / "old")  # move aside, then swap in: never a moment with a half folder
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block is done, then deliver it as usual.

    torch.save interrupted midway does not raise KeyboardInterrupt: its zip writer's cleanup fails with a
    RuntimeError ("unexpected pos ...") instead, so a stage would end in a traceback rather than its one
    "interrupted" line. A write takes a fraction of a second, so holding the signal that long is harmless.
    Only the main thread can set signal handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        if callable(previous):
            previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    with interrupts_held(), atomic_path(path) as tmp, open(tmp, "wb") as f:
        # through a file object: given a path, torch names the zip's inner folder after the (random)
        # temp name, and identical runs would write different bytes (and different DVC hashes)
        torch.save(obj, f)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (weights files are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
