"""The one entry point of every stage script: command line, params, and the error contract.

A stage script is a table of contents::

    with stage("teacher", __doc__, reads=("seed", "teacher"),
               inputs={"data": "prepared data folder"}, outputs={"out": "checkpoint to write"}) as (params, paths):
        ...  # build objects, call src/ functions

``stage`` parses ``--params`` and one required ``--<name>`` per declared input, output and option (the paths
come from dvc.yaml, never from defaults here), loads and checks the WHOLE params file, and hands the body
the typed ``Params`` restricted to the sections it declared in ``reads`` (the same keys as the stage's
``params:`` in dvc.yaml; a test compares the two), so a stage cannot read a param whose change DVC would not
see. Expected faults (``config.UserError``, a missing file, a full disk, Ctrl-C) end the stage with one
``<stage>: error: ...`` line and a non-zero status; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import sys
from typing import Any, Iterator, Mapping, Sequence

from .config import Params, UserError, load_params


def user_error_message(stage: str, e: BaseException) -> str | None:
    """The one-line ``<stage>: error: ...`` for an expected fault, or None for a bug (keeps its traceback)."""
    if isinstance(e, UserError):
        return f"{stage}: error: {e}"
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        name = e.filename or ""
        return f"{stage}: error: {name}{': ' if name else ''}{e.strerror or e}"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{stage}: error: {e.filename or 'disk'}: no space left on the device; free some and rerun"
    if isinstance(e, KeyboardInterrupt):
        return f"{stage}: interrupted; nothing half-written was left (outputs are replaced only when complete)"
    return None


@contextlib.contextmanager
def stage_errors(stage: str) -> Iterator[None]:
    """Expected faults exit non-zero with ``<stage>: error: <file or key>: <what>`` (Ctrl-C: status 130).

    Outputs are written atomically, so after any of these the previous outputs (or none) are what is on
    disk, and DVC records nothing.
    """
    try:
        yield
    except (Exception, KeyboardInterrupt) as e:
        message = user_error_message(stage, e)
        if message is None:
            raise
        if isinstance(e, KeyboardInterrupt):
            print(message, file=sys.stderr)
            raise SystemExit(130) from None
        raise SystemExit(message) from None


class StageParams:
    """``Params`` seen through a stage's declared ``reads``: an undeclared section is an AttributeError.

    Args:
        params: the whole file, checked.
        stage: the stage's name, for the message.
        reads: dvc.yaml param keys (``seed``, ``teacher``, ``prune.rounds.{round}``); their first part is
            the section that may be read.
    """

    def __init__(self, params: Params, stage: str, reads: Sequence[str]) -> None:
        self._params, self._stage = params, stage
        self._sections = {r.split(".")[0] for r in reads}

    def __getattr__(self, name: str) -> Any:
        if name in {f.name for f in dataclasses.fields(Params)} and name not in self._sections:
            raise AttributeError(f"stage {self._stage} reads params section {name!r} without declaring it in "
                                 f"reads= (and in its params: in dvc.yaml), so DVC would not rerun it on a change")
        return getattr(self._params, name)


@contextlib.contextmanager
def stage(name: str, doc: str | None, *, reads: Sequence[str], inputs: Mapping[str, str] = {},
          outputs: Mapping[str, str] = {}, options: Mapping[str, str] = {}) -> Iterator[tuple[Any, argparse.Namespace]]:
    """Run a stage body: yields ``(params, args)``; see the module doc.

    Args:
        name: the stage's name (dvc.yaml), first word of every error line.
        doc: the script's ``__doc__`` (its ``--help``).
        reads: the params keys the stage reads, exactly its ``params:`` in dvc.yaml (``{option}`` is
            filled from ``options``, e.g. ``prune.rounds.{round}``).
        inputs, outputs: ``--<name>`` path arguments with their help (dashes for underscores).
        options: other required ``--<name>`` arguments (e.g. a round's name).
    """
    with stage_errors(name):
        ap = argparse.ArgumentParser(prog=f"stages/{name}.py", description=doc)
        ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        for kind, declared in (("input", inputs), ("output", outputs), ("option", options)):
            for flag, help in declared.items():
                ap.add_argument(f"--{flag.replace('_', '-')}", required=True, help=f"{help} ({kind})")
        args = ap.parse_args()
        params = load_params(args.params)  # the whole file is checked before any work
        yield StageParams(params, name, reads), args
