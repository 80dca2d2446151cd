"""The knee search: where the data at hand stops forgiving cuts, measured rather than assumed.

Fixed widths tuned on one dataset miss the knee on another (a harder task loses 10 points at widths Fashion-MNIST
forgives). The rounds of width ``auto`` find it for the data at hand by bisection over ``prune.search.ladder``,
each round reading the ones before it:

* ``plan@<round>`` reads the probes so far (``models/<after>.run.json``: the rounds chained by ``after``, each
  with its validation counts paired against the control) and gives its round the next width (``next_width``):
  the middle of the ladder's widths still between the narrowest width that kept the tolerance and the widest that
  did not, by the ship rule's own test (the paired lower bound at ``evaluate.confidence`` against
  ``-evaluate.max_drop``). Once two neighbouring rungs bracket the knee, the next round refines between them
  (their geometric mean). One file per round, ``search/plan/<round>.json``: a prune stage depends on its own file
  alone, so DVC reruns a round only when its width changed.
* ``prune@<round>`` cuts and fine-tunes fully, then records its probe (``screen.probe``: validation counts paired
  with the control's, bytes) after the probes it was planned from, in its ``run.json``.

Three rounds resolve the default ladder of nine rungs to neighbouring widths (all knees but the narrowest rung);
the full fine-tune decides, not a proxy.
An optional ``screen`` (``prune.search.epochs`` >= 1; ``shrink.screen``) fine-tunes every rung briefly and sets the
first probe at the screen's crossing (the last rung within the tolerance) instead of the ladder's middle: measured,
it ranks the widths well but misreads the tolerance by one to four rungs either way
(docs/experiments/2026-12-06-knee-search.md), so the default is no screen.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

from .config import AUTO, RoundParams, UserError
from .io import read_json
from .stats import lower_bound_counts

PLAN_SUFFIX = ".json"
PROBES = "probes"  # the key of a round's run.json (and of its plan) holding the probes, in the order they ran


def ladder(widths: Sequence[float]) -> list[float]:
    """The ladder's widths, widest first."""
    return sorted(widths, reverse=True)


def within(row: dict[str, Any], max_drop: float, confidence: float) -> bool:
    """Whether a cut is within ``max_drop`` points of its reference by the ship rule's own test: the one-sided lower
    bound of the paired validation difference at ``confidence`` (0: the point estimate) is >= -max_drop. ``row``:
    a screened cut (reference: the uncut parent fine-tuned alike) or a round's probe (reference: the control), with
    ``val_n`` images, ``val_only_cut`` right by the cut alone and ``val_only_uncut`` by the reference alone; a row
    without them is read by its point estimate (``drop_pt``)."""
    if "val_n" in row:
        low = lower_bound_counts(row["val_n"], row["val_only_cut"], row["val_only_uncut"], confidence)
    else:
        low = -row["drop_pt"]
    return low >= -max_drop - 1e-9  # exactly max_drop is within


def crossing(curve: list[dict[str, Any]], max_drop: float, confidence: float = 0.0) -> int:
    """Index (into a screen's ``curve``, widest first) of the last width within the tolerance (``within``) before
    the first that is not; -1 when even the widest is not."""
    last = -1
    for i, row in enumerate(curve):
        if not within(row, max_drop, confidence):
            break
        last = i
    return last


def bracket(probes: list[dict[str, Any]], max_drop: float, confidence: float = 0.0) -> tuple[float, float]:
    """(narrowest width that kept the tolerance, 1.0 when none: the control itself; widest narrower width that
    did not, 0.0 when none). A failure wider than a pass is noise the pass outranks."""
    low = min((p["width"] for p in probes if within(p, max_drop, confidence)), default=1.0)
    high = max((p["width"] for p in probes if p["width"] < low and not within(p, max_drop, confidence)),
               default=0.0)
    return low, high


def next_width(rungs: Sequence[float], probes: list[dict[str, Any]], max_drop: float, confidence: float = 0.0,
               screened: list[dict[str, Any]] | None = None) -> float:
    """The width the next auto round probes: the middle rung (the wider of two middles) strictly inside the
    bracket (``bracket``) not probed yet. No rung left inside: the geometric mean of the bracket's ends (below the
    narrowest rung: one more of the ladder's last steps). ``screened``: a screen's curve; with no probe yet, the
    first probe is its crossing (the ladder's middle when no rung is within)."""
    rungs = ladder(rungs)
    if not rungs:
        raise ValueError("no ladder to search (prune.search.ladder is empty)")
    if not probes and screened:
        c = crossing(screened, max_drop, confidence)
        if c >= 0:
            return screened[c]["width"]
    low, high = bracket(probes, max_drop, confidence)
    done = {p["width"] for p in probes}
    inside = [w for w in rungs if high < w < low and w not in done]
    if inside:
        return inside[(len(inside) - 1) // 2]
    if high > 0:
        w = math.sqrt(low * high)
    else:  # everything down to the narrowest rung kept the tolerance
        step = rungs[-1] / rungs[-2] if len(rungs) >= 2 else 0.5
        w = low * step
    return round(w, 4)


def plan_round(name: str, r: RoundParams, rungs: Sequence[float], probes: list[dict[str, Any]], max_drop: float,
               confidence: float = 0.0, screened: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Round ``name``'s plan: its width (``next_width`` for an ``auto`` round, its own for a fixed one) and the
    probes it was planned from (the prune stage records them, then its own, for the next round's plan)."""
    width = next_width(rungs, probes, max_drop, confidence, screened) if r.auto else r.width
    return {"round": name, "width": width, "source": "search" if r.auto else "params", PROBES: probes}


def probes_of(run_json: str | Path) -> list[dict[str, Any]]:
    """The probes a round's ``run.json`` holds (its own last); none in the control's."""
    return list(read_json(run_json).get(PROBES, []))


def planned_width(plan_file: str | Path, name: str, r: RoundParams) -> float:
    """Round ``name``'s width: params.yaml's when fixed, the plan's when ``auto``. A plan that disagrees with a
    fixed width, or names another round, is stale: an error naming the file (rerun ``dvc repro``)."""
    entry = read_json(plan_file)
    if entry.get("round") != name:
        raise UserError(f"{plan_file}: the plan of round {entry.get('round')!r}, not {name!r}")
    if not r.auto and entry["width"] != r.width:
        raise UserError(f"{plan_file}: width {entry['width']} but params.yaml's prune.rounds.{name}.width is "
                         f"{r.width}: a stale plan (dvc repro plan@{name})")
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
                raise UserError(f"{f}: no plan for prune.rounds.{name} (width {AUTO}): run dvc repro plan@{name}")
            out[name] = dataclasses.replace(r, width=planned_width(f, name, r))
    return out
