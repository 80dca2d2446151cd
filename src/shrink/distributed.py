"""Several processes per training stage: ``torchrun`` with DistributedDataParallel, no new dependency.

A stage whose ``<section>.train.nproc`` is 1 runs as one plain process. Above 1,
``launch(cfg, key)`` (``relaunch`` with ``nproc: auto`` resolved) runs the same command line under ``python -m
torch.distributed.run`` (one machine, N processes, rendezvous on a free loopback port) and watches over it
(``supervise``): stopped by SIGTERM, SIGHUP or Ctrl-C, or when ``dvc repro`` above it dies, the stage ends
torchrun and every worker within seconds and stops with one line; the resume state stays that of the last
complete epoch. Inside, ``context()`` initialises the process group (gloo on the CPU, NCCL on CUDA) and
tells ``train.fit`` which shard of each global batch this rank trains on. Only rank 0 writes checkpoints,
metrics and dvclive logs (``is_writer``).

Several machines: run ``torchrun --nnodes=M --node-rank=i --rdzv-endpoint=HOST:PORT ... stages/<x>.py``
yourself on each machine (docs/distributed.md): the stage sees ``WORLD_SIZE`` already
set and does not relaunch.

What is checked where processes start, as one-line errors instead of a rank's traceback: ``nproc`` against
the GPUs torch sees (``check_nproc``, before torchrun starts), ``batch_size`` against the world torchrun
actually started (``check_batch``, in each rank, also under a torchrun started by hand), and a rank's
``LOCAL_RANK`` against the GPUs of its machine (``context``).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch

from .config import ParamsError, TrainParams, UserError, cores
from .device import select_device


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank among ``world`` processes, and the device it trains on."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_rank_zero() -> bool:
    """This process is the one that writes a stage's outputs: rank 0 under torchrun, or a plain process.
    (Before or after ``context``: it reads torchrun's environment, not the process group.)"""
    return int(os.environ.get("RANK", "0")) == 0


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_nproc(nproc: int, device: str, device_count: int, key: str = "train") -> None:
    """Refuse more CUDA processes than GPUs: rank r takes ``cuda:r``, so with fewer GPUs than processes the
    last ranks would die in ``torch.cuda.set_device`` with "invalid device ordinal" (and NCCL refuses two
    ranks on one GPU). The CPU has no such limit.

    Args:
        nproc: processes to start on this machine.
        device: the device type they train on, ``"cuda"`` or ``"cpu"``.
        device_count: the CUDA devices visible (``torch.cuda.device_count()``, after CUDA_VISIBLE_DEVICES).
        key: the params section holding ``nproc`` (e.g. ``distill.train``), for the message.
    """
    if device != "cuda" or nproc <= device_count:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f"{device_count} GPU{'s' if device_count != 1 else ''}" + (
        f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
    raise ParamsError(f"params.yaml: {key}.nproc: {nproc} processes on CUDA need one GPU each, but torch sees "
                      f"{seen}; set nproc to at most {device_count}, or device: cpu")


def check_batch(batch_size: int, world: int, key: str = "train") -> None:
    """The global batch must split evenly over the processes actually started, which under a torchrun
    started by hand (several machines: ``--nnodes`` x ``--nproc-per-node``) is not ``nproc``.

    Args:
        batch_size: the global batch (``<key>.batch_size``).
        world: processes started in all (torchrun's ``WORLD_SIZE``).
        key: the params section (e.g. ``distill.train``), for the message.
    """
    if batch_size % world:
        raise ParamsError(f"params.yaml: {key}.batch_size: {batch_size} does not split evenly over the {world} "
                          f"processes torchrun started (WORLD_SIZE={world}); use a multiple of {world}")


def relaunch(nproc: int, *, device: str = "auto", key: str = "train", batch_size: int | None = None) -> None:
    """With ``nproc`` > 1 and not yet under torchrun, run ``torchrun`` with the same command line ``nproc`` times
    and exit with its status (``supervise``); returns (doing nothing) otherwise. ``TrainParams`` has already checked
    that the global batch splits evenly over ``nproc``.

    Args:
        nproc: ``<key>.nproc``, processes on this machine.
        device: ``<key>.device``; on CUDA, ``nproc`` may not exceed the visible GPUs (``check_nproc``).
        key: the params section these come from (e.g. ``distill.train``), named in errors.
        batch_size: ``<key>.batch_size``; when given, each rank under torchrun checks it against the
            ``WORLD_SIZE`` actually started (``check_batch``), torchrun started by hand included.
    """
    if under_torchrun():
        if batch_size is not None:
            check_batch(batch_size, int(os.environ["WORLD_SIZE"]), key)
        return
    if nproc <= 1:
        return
    on_cuda = select_device(device).type == "cuda"
    check_nproc(nproc, "cuda" if on_cuda else "cpu", torch.cuda.device_count() if on_cuda else 0, key)
    env = dict(os.environ)
    if not on_cuda:
        # the cores are shared among the processes: 2 processes on 2 cores use 1 thread each
        env["OMP_NUM_THREADS"] = str(max(1, cores() // nproc))
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo talks over loopback only
    port = free_loopback_port()
    # torchrun's own folder (each rank's error.json, read for its failure summary): without --log-dir it makes a
    # torchelastic_* folder in TMPDIR per launch and leaves it there; this one goes when the launch ends
    log_dir = tempfile.mkdtemp(prefix="shrink-torchrun-")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={port}", "--rdzv-backend=static",
           "--monitor-interval=1", f"--log-dir={log_dir}", sys.argv[0], *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        supervise(cmd, env)
    finally:  # supervise ends torchrun's whole tree before it returns or raises
        shutil.rmtree(log_dir, ignore_errors=True)


# ---------------------------------------------------------------- the torchrun tree, ended with the stage

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)  # kill / a scheduler, a closed terminal, Ctrl-C
GRACE_SECONDS = 5.0  # after SIGTERM, what is left of the tree gets SIGKILL


class Stopped(UserError):
    """The stage was stopped by a signal; its torchrun processes have ended."""


class _Signalled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process (Linux ``/proc``; empty where there is none)."""
    out = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    # the command name in parentheses may hold spaces: the fields after its last ')'
                    out[int(entry.name)] = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children, theirs, ...): torchrun starts its workers in sessions of their
    own, so neither its process group nor its session reaches them."""
    parents, found, frontier = _parent_pids(), [], {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found += sorted(frontier)
    return found


def end_tree(child: subprocess.Popen, grace: float = GRACE_SECONDS) -> int:
    """End ``child`` (torchrun, started here in a session of its own) and every process under it: SIGKILL to
    torchrun (its own shutdown would wait 30 s and print a traceback), SIGTERM to the rest, SIGKILL to what is
    left after ``grace`` seconds. Each process is held by a pidfd where Linux has them, so a PID reused in the
    meantime is never signalled. Returns how many processes there were under torchrun."""
    under = descendants(child.pid)
    handles = {}
    for pid in under:
        with contextlib.suppress(OSError, AttributeError):
            handles[pid] = os.pidfd_open(pid)

    def send(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            if pid in handles:
                signal.pidfd_send_signal(handles[pid], sig)
            else:
                os.kill(pid, sig)

    def alive(pid: int) -> bool:
        if pid in handles:  # a pidfd reads as ready once its process has ended
            return not select.select([handles[pid]], [], [], 0)[0]
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    for pid in under:
        send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(p) for p in under) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in under:
        if alive(pid):
            send(pid, signal.SIGKILL)
    child.wait()
    for pid in under:  # orphans come to this process (a subreaper, see _watch_over_torchrun): reap them
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    for fd in handles.values():
        os.close(fd)
    return len(under)


def _prctl(option: int, value: int) -> bool:
    """Linux ``prctl(option, value)``; False where there is none."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_over_torchrun() -> None:
    """Linux: SIGTERM this process when its parent (``dvc repro``) dies, e.g. by ``kill <pid>``, so the torchrun
    tree does not train on unseen (PR_SET_PDEATHSIG); and adopt torchrun's workers if it dies first, so
    ``end_tree`` reaps them whatever the system's init does (PR_SET_CHILD_SUBREAPER)."""
    if _prctl(1, int(signal.SIGTERM)) and os.getppid() == 1:  # the parent was gone before the call
        os.kill(os.getpid(), signal.SIGTERM)
    _prctl(36, 1)


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "busybox"}


def launcher() -> int:
    """The PID of the process that started this stage, past a shell that runs its cmd (dvc runs a stage's cmd
    with ``$SHELL -c``: bash execs a lone command, dash stays in between and outlives a killed dvc, so
    PR_SET_PDEATHSIG on the parent alone would miss dvc's death)."""
    pid = os.getppid()
    with contextlib.suppress(OSError, IndexError, ValueError):
        while Path(f"/proc/{pid}/comm").read_text().strip() in SHELLS:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"-c" not in args:  # an interactive shell: the user's, not a wrapper of this stage
                break
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return pid


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (or was never there): /proc has no entry or holds a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def supervise(cmd: list[str], env: dict[str, str]) -> NoReturn:
    """Run torchrun (``cmd``) in a session of its own and exit with its status. On SIGTERM, SIGHUP or SIGINT
    (each unless ignored when the stage started, as ``nohup`` or a background job leave them) end the whole
    torchrun tree within seconds (``end_tree``) and stop with one line: ``Stopped`` (``KeyboardInterrupt`` for
    Ctrl-C). Each rank's resume state is saved atomically at an epoch's end, so the last complete epoch's
    state is intact and the next ``dvc repro`` resumes there.

    Args:
        cmd: the torchrun command line.
        env: its environment.
    """
    caught: list[int] = []
    child: subprocess.Popen | None = None

    def on_signal(signum: int, _frame) -> None:
        caught.append(signum)
        if child is not None and len(caught) == 1:  # once: dvc dying of the same SIGHUP sends a SIGTERM after it
            raise _Signalled(signum)

    handled = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    for sig in handled:
        signal.signal(sig, on_signal)
    _watch_over_torchrun()
    starter = launcher()
    try:
        child = subprocess.Popen(cmd, env=env, start_new_session=True)
        if caught:  # a signal while torchrun was starting
            raise _Signalled(caught[0])
        code = None
        while code is None:  # short waits: a signal taken by another thread does not interrupt a long one
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = child.wait(timeout=1)
            if code is None and starter != os.getppid() and _gone(starter):  # dvc died behind a shell
                raise _Signalled(signal.SIGTERM)
    except _Signalled as e:
        n = end_tree(child)
        print(file=sys.stderr)  # rank 0's progress bar was cut mid-line: the stage's line goes on one of its own
        if e.signum == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise Stopped(f"stopped by {signal.Signals(e.signum).name}: torchrun and its {n} processes ended; the next "
                      f"dvc repro resumes at the last complete epoch") from None
    raise SystemExit(code if code >= 0 else 128 - code)


def launch(cfg: TrainParams, key: str) -> None:
    """Where a training stage's processes start: ``relaunch`` with ``cfg.nproc`` resolved here (``auto``
    becomes a count on this machine only now, never when params are read).

    Args:
        cfg: the stage's training params.
        key: their place in params.yaml (e.g. ``teacher.train``), named in errors.
    """
    relaunch(cfg.processes(), device=cfg.device, key=key, batch_size=cfg.batch_size)


def context(device: torch.device) -> Dist:
    """Join the process group when started by torchrun (else the single-process ``Dist``).

    Args:
        device: the device type the run asked for; on CUDA each rank takes ``cuda:<LOCAL_RANK>``.
    """
    if not under_torchrun():
        return Dist(0, 1, device)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local >= count:  # a torchrun started by hand with more processes per machine than GPUs
            raise UserError(f"torchrun: local rank {local} has no GPU of its own: torch sees {count} on this "
                            f"machine; start at most {count} per machine (--nproc-per-node={count})")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def all_sum(values: list[float], ctx: Dist) -> list[float]:
    """Sum ``values`` over all ranks (identity with one process)."""
    if not ctx.on:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: torch.nn.Module, ctx: Dist) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them at the start
    of each training forward, so after the last step each rank still holds its own part's update."""
    if ctx.on:
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b.data, src=0)


def revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """The inverse of ``nn.SyncBatchNorm.convert_sync_batchnorm``: plain ``BatchNorm2d`` layers again
    (same parameters and buffers), so the trained model runs anywhere, e.g. evaluated on the CPU."""
    out = module
    if isinstance(module, torch.nn.SyncBatchNorm):
        out = torch.nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats).to(next(iter(module.state_dict().values())).device)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


def shard(n: int, ctx: Dist) -> slice:
    """This rank's contiguous part of ``n`` items (sizes differ by at most one)."""
    base, extra = divmod(n, ctx.world)
    start = ctx.rank * base + min(ctx.rank, extra)
    return slice(start, start + base + (1 if ctx.rank < extra else 0))


def finish(ctx: Dist) -> None:
    """Leave the process group cleanly (all ranks wait for the writer first)."""
    if ctx.on:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def state_hash(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state_dict values (names and bytes), to compare ranks."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_rank_hash(model: torch.nn.Module, ctx: Dist) -> None:
    """Test hook: with ``SHRINK_RANK_HASH_DIR`` set, every rank writes its weights' hash to
    ``<dir>/rank<r>.sha256`` so a test can check that all ranks ended with the same weights."""
    folder = os.environ.get("SHRINK_RANK_HASH_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"rank{ctx.rank}.sha256").write_text(state_hash(model) + "\n")
