"""The knee search: where the data at hand stops forgiving cuts, measured rather than assumed.

Fixed widths tuned on one dataset miss the knee on another (a harder task loses 10 points at widths Fashion-MNIST
forgives). Two stages find it for the data at hand:

* ``screen`` (``shrink.screen``: it trains, so it lives apart from the plan's arithmetic here) cuts
  ``prune.search.parent`` once to each width of ``prune.search.ladder`` and fine-tunes every cut, and the uncut
  parent alike, for ``prune.search.epochs`` (a short screen: ``rounds.run_round`` with the rounds'
  own recipe). A cut is never read right after the cut: at 50 % and below that reads 0.10-0.28 on the default
  data, chance; a short fine-tune ranks the widths (docs/prune-schedule.md, "The knee search", has the rank
  correlation against full fine-tuning). It writes the curve: each width's validation accuracy, parameters and
  weight-only int8 bytes, and the uncut reference's accuracy.
* ``plan`` reads the curve by the ship rule's own test (the paired lower bound at ``evaluate.confidence`` against
  ``-evaluate.max_drop``, the uncut parent in the control's place) and gives each round of width ``auto`` its width
  (``plans/<round>.json``; a fixed round's file holds its own width). The prune stages depend on their file
  alone, so DVC reruns a round only when its width changed, and a change of the rounds reruns no screen.

The picks (``pick_widths``): walking the ladder from wide to narrow, the crossing is the last width still within
the tolerance before the first that is not; the auto rounds take the crossing's wider neighbour, the crossing and
then narrower widths (one round: the crossing alone). The screen is a bracket, not the decision: the ship rule
then reads every fully fine-tuned round against the control (``evaluate.reference``) with its confidence bound.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from .config import AUTO, RoundParams, UserError
from .io import read_json, write_json
from .stats import lower_bound_counts

PLAN_SUFFIX = ".json"


def ladder(widths: Sequence[float]) -> list[float]:
    """The screened widths, widest first."""
    return sorted(widths, reverse=True)


def within(row: dict[str, Any], max_drop: float, confidence: float) -> bool:
    """Whether a screened cut is within ``max_drop`` points of the uncut parent by the ship rule's own test: the
    one-sided lower bound of the paired validation difference at ``confidence`` (0: the point estimate) is
    >= -max_drop. A row without paired counts is read by its point estimate (``drop_pt``)."""
    if "val_n" in row:
        low = lower_bound_counts(row["val_n"], row["val_only_cut"], row["val_only_uncut"], confidence)
    else:
        low = -row["drop_pt"]
    return low >= -max_drop - 1e-9  # exactly max_drop is within


def crossing(curve: list[dict[str, Any]], max_drop: float, confidence: float = 0.0) -> int:
    """Index (into ``curve``, widest first) of the last width within the tolerance (``within``) before the first
    that is not; -1 when even the widest is not."""
    last = -1
    for i, row in enumerate(curve):
        if not within(row, max_drop, confidence):
            break
        last = i
    return last


def pick_widths(curve: list[dict[str, Any]], max_drop: float, k: int, confidence: float = 0.0) -> list[float]:
    """The ``k`` widths the auto rounds take, widest first: the crossing's wider neighbour, the crossing, then
    narrower ones (``k`` 1: the crossing). Nothing within the tolerance: the ``k`` widest; everything within:
    the ``k`` narrowest."""
    if k <= 0:
        return []
    if k > len(curve):
        raise ValueError(f"{k} rounds to plan, {len(curve)} screened widths")
    c = crossing(curve, max_drop, confidence)
    start = 0 if c < 0 else max(0, c - (1 if k >= 2 else 0))
    start = min(start, len(curve) - k)
    return [row["width"] for row in curve[start:start + k]]


def plan(curve: dict[str, Any], rounds: dict[str, RoundParams], max_drop: float, confidence: float = 0.0
         ) -> dict[str, dict[str, Any]]:
    """Each round's width: the screen's pick for an ``auto`` round (in the order params.yaml lists them, widest
    first), its own for a fixed one. ``max_drop``, ``confidence``: the ship rule's (``evaluate``)."""
    auto = [n for n, r in rounds.items() if r.auto]
    picks = pick_widths(curve["curve"], max_drop, len(auto), confidence) if auto else []
    chosen = dict(zip(auto, picks))
    return {n: {"round": n, "width": chosen.get(n, r.width), "source": "search" if r.auto else "params"}
            for n, r in rounds.items()}


def write_plan(entries: dict[str, dict[str, Any]], folder: str | Path) -> None:
    """One file per round (``<folder>/<round>.json``): a prune stage depends on its own file alone."""
    from .io import atomic_dir

    with atomic_dir(folder) as tmp:
        for name, entry in entries.items():
            write_json(entry, tmp / f"{name}{PLAN_SUFFIX}")


def planned_width(plan_file: str | Path, name: str, r: RoundParams) -> float:
    """Round ``name``'s width: params.yaml's when fixed, the plan's when ``auto``. A plan that disagrees with a
    fixed width, or names another round, is stale: an error naming the file (rerun ``dvc repro``)."""
    entry = read_json(plan_file)
    if entry.get("round") != name:
        raise UserError(f"{plan_file}: the plan of round {entry.get('round')!r}, not {name!r}")
    if not r.auto and entry["width"] != r.width:
        raise UserError(f"{plan_file}: width {entry['width']} but params.yaml's prune.rounds.{name}.width is "
                         f"{r.width}: a stale plan (dvc repro plan)")
    return float(entry["width"])


def resolve(rounds: dict[str, RoundParams], plans: str | Path | None) -> dict[str, RoundParams]:
    """``rounds`` with every ``auto`` width replaced by its plan's (``<plans>/<round>.json``), for the stages after
    the rounds (evaluate: labels and deltas). Fixed rounds are unchanged; an auto round with no plan file is an
    error naming it."""
    out = dict(rounds)
    for name, r in rounds.items():
        if r.auto:
            f = Path(plans or "search/plan") / f"{name}{PLAN_SUFFIX}"
            if not f.is_file():
                raise UserError(f"{f}: no plan for prune.rounds.{name} (width {AUTO}): run dvc repro plan")
            out[name] = dataclasses.replace(r, width=planned_width(f, name, r))
    return out
