"""What ships: a pure choice among measured candidates, by a named objective (no torch, no files).

The evaluate stage measures every model and artifact (``shrink.measure``) and hands this module a table: one
``Row`` per measured row with its name, the fp32 network it runs (``model``), its format (``fp32`` or a
quantization format of ``shrink.formats``), its bytes on disk, its accuracy on the decision split (validation:
no test label decides anything) with each image's correctness, and its min and median latency per batch size.
``choose`` takes the candidates from it (``candidates``: the artifacts of the given source models, by default
the unpruned student and every prune round; of one format only when ``evaluate.ship`` names it) and lets an
objective (``evaluate.objective``) pick one, saying why (``Choice``: the name, the rule that applied and a
verdict per candidate). The reference rows (``evaluate.reference``, the equal-budget ``control`` by default, for
accuracy, and ``distill.ort`` for speed, in the pipeline) and every bound are ``Terms``: arguments, not constants
of this module.

Objectives, one ``@register_objective`` entry each (tests run every registered one on synthetic tables):

``smallest_fast`` (the default), among the candidates:

1. *accurate* (non-inferior to the reference): the one-sided lower confidence bound, at ``confidence``
   (``evaluate.confidence``, 0.95 by default), of the paired difference (candidate - reference) on the decision
   split is >= ``-max_drop`` points (``stats.lower_bound``: the images both got right or wrong carry no
   information; the discordant ones decide). ``confidence`` 0 is the point estimate: decision-split accuracy
   >= the reference's minus ``max_drop`` points. When the decision split is too small for ``max_drop`` (one
   image weighs more than the tolerance, or the bound cannot come within it), ``Choice.note`` says so with the
   number of images it would take (``stats.images_needed``);
2. *fast*: at every batch size, min latency within 10 % (``FAST_BAND``) of the speed reference's, the
   unpruned student in ORT fp32 (what a user gets for free); on a busy machine the band widens to the speed
   reference's own spread (its median / min), since closer runtimes are not told apart. Each verdict also
   records the ratio to the fastest runtime of the artifact's own network (its accurate artifacts, its fp32
   net in eager and in ORT), which is the bar only when the speed reference was not measured: at batch 64 an
   int8w file runs 5-15 % slower than its own network in ORT fp32 (its weights are dequantized on every call;
   10-30 % faster at batch 1), so that bar turned on noise and once shipped a 0.2 cut's file over the smaller
   0.15 cut's, which was no slower;
3. ship the smallest file among those passing both; equal sizes go by the formats' tie order
   (``formats.tie_order``: int8w, int8, uint8, fp16).

Fallbacks: no artifact passes both -> the fastest accurate one (min latency at the largest batch); none is
accurate -> the most accurate one. Latency decides through a 10 % band on the *min* of the repeats (the least
noisy statistic on a shared machine); a deep round's int8w files run 1.3-1.7x as fast as ``distill.ort``, far
inside the band, so noise does not move the choice; a run where it does is visible in ``latency.json``'s
``shipped.latency_verdicts``. With a format named (``evaluate.ship``) it ships the smallest accurate artifact of
that format (timings decide nothing then; none accurate -> the most accurate of that format).

``most_accurate`` (the course's objective): the most accurate candidate whose file is at most ``max_bytes``
(``evaluate.max_bytes``, the course's 300,000 bytes); ties go to the smaller file, then the tie order; when no
file fits, the smallest file ships and the rule says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .registry import Registry
from .stats import images_needed, lower_bound

FAST_BAND = 1.10  # "fast": within 10 % of the speed reference (of the same network's fastest runtime without it)


@dataclass(frozen=True)
class Row:
    """One measured model or artifact.

    Attributes:
        name: e.g. ``prune_3.int8w``, ``distill.ort``, ``distill``.
        model: the fp32 network it runs (its source; a checkpoint's own name).
        format: ``fp32`` (a checkpoint, eager or ORT) or a quantization format's name.
        bytes: its size on disk.
        acc: accuracy on the decision split (validation).
        correct: per image of the decision split, whether it was right (for rules on paired differences).
        min_ms, median_ms: batch size -> min / median latency of the timed repeats, in ms.
    """

    name: str
    model: str
    format: str
    bytes: int
    acc: float
    correct: tuple[bool, ...] = ()
    min_ms: Mapping[int, float] = field(default_factory=dict)
    median_ms: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Terms:
    """What an objective is asked (``evaluate`` params and the reference rows).

    Attributes:
        reference: the accuracy reference row (the fp32 ``control``, or ``distill``: ``evaluate.reference``).
        speed_reference: the speed reference row (``distill.ort``); when the table has no such row (or None),
            each candidate's own network is the speed bar.
        ties: the quantization formats in tie order (``formats.tie_order()``); every candidate's is here.
        max_drop: points of accuracy a candidate may lose against the reference (``smallest_fast``).
        max_bytes: the largest file that may ship (``most_accurate``).
        batch_sizes: the timed batch sizes.
        only: a format's name to ship that format only (``evaluate.ship``), None for any (``auto``).
        confidence: of the one-sided bound that decides *accurate* (``smallest_fast``); 0: the point estimate.
    """

    reference: str
    speed_reference: str | None
    ties: Sequence[str]
    max_drop: float = 0.5
    max_bytes: int = 300_000
    batch_sizes: Sequence[int] = (1, 64)
    only: str | None = None
    confidence: float = 0.0


@dataclass(frozen=True)
class Choice:
    """What ships: the row's name, the rule that chose it, each candidate's verdicts, and a note when the
    decision split is too small for the rule (one line, empty otherwise)."""

    name: str
    rule: str
    verdicts: dict[str, dict[str, Any]]
    note: str = ""


Table = Mapping[str, Row]
Objective = Callable[[Table, list[str], Terms], Choice]
_OBJECTIVES: Registry[Objective] = Registry("ship objective")


def register_objective(name: str) -> Callable[[Objective], Objective]:
    """Decorator: add an objective ``fn(table, candidates, terms) -> Choice`` under ``name``."""
    return lambda fn: _OBJECTIVES.add(name, fn)


def list_objectives() -> list[str]:
    """The registered objectives' names (``evaluate.objective``'s allowed values)."""
    return _OBJECTIVES.names()


def get_objective(name: str) -> Objective:
    """The registered objective ``name``; a KeyError naming the known ones otherwise."""
    return _OBJECTIVES.get(name)


def candidates(table: Table, sources: Sequence[str], terms: Terms) -> list[str]:
    """The rows that may ship: each source's artifact in each format (``terms.only``'s alone), source by source
    and in tie order; a ValueError when there is none."""
    formats = terms.ties if terms.only is None else (terms.only,)
    found = [n for s in sources for f in formats for n, r in table.items() if r.model == s and r.format == f]
    if not found:
        raise ValueError(f"no {terms.only or 'quantized'} artifact of {', '.join(sources)} to ship "
                         f"(expected models/quantized/<model>.*)")
    return found


def choose(table: Table, sources: Sequence[str], terms: Terms, objective: str = "smallest_fast") -> Choice:
    """What ships among the artifacts of ``sources`` (see the module doc), by the objective named."""
    return get_objective(objective)(table, candidates(table, sources, terms), terms)


def _tie_key(table: Table, cands: list[str], terms: Terms) -> dict[str, tuple[int, int]]:
    return {c: (list(terms.ties).index(table[c].format), i) for i, c in enumerate(cands)}


def _most_accurate(table: Table, cands: list[str]) -> str:
    return max(cands, key=lambda c: (table[c].acc, -table[c].bytes))


def _band(row: Row, b: int) -> float:
    # the band widens by the faster runtime's own spread (median / min): on a busy machine two runtimes
    # whose samples overlap are not told apart, so noise cannot make an equally fast artifact "slow"
    return max(FAST_BAND, row.median_ms[b] / row.min_ms[b])


def speed_verdicts(table: Table, cands: list[str], accurate: list[str], terms: Terms) -> dict[str, dict[str, Any]]:
    """Per candidate: its accuracy, ``accurate``, its min-latency ratios to the fastest runtime of its own
    network and to the speed reference at each batch size, and ``fast`` (within the band of the bar)."""
    ref = terms.speed_reference if terms.speed_reference in table else None
    verdicts = {}
    for c in cands:
        net = table[c].model
        # the runtimes of the same network: its accurate artifacts, its fp32 net in eager and in ORT
        own = [a for a in accurate if table[a].model == net] + [n for n, r in table.items()
                                                                if r.model == net and r.format == "fp32"]
        own = own or [c]
        v: dict[str, Any] = {"val_acc": table[c].acc, "accurate": c in accurate}
        fast = True
        for b in terms.batch_sizes:
            best = min(own, key=lambda n: table[n].min_ms[b])
            v[f"b{b}_vs_fastest"] = round(table[c].min_ms[b] / table[best].min_ms[b], 3)
            if ref:  # the bar: what a user gets for free; the own-network ratio is information
                v[f"b{b}_vs_{ref}"] = round(table[c].min_ms[b] / table[ref].min_ms[b], 3)
                fast &= v[f"b{b}_vs_{ref}"] <= _band(table[ref], b)
            else:
                fast &= v[f"b{b}_vs_fastest"] <= _band(table[best], b)
        v["fast"] = bool(fast)
        verdicts[c] = v
    return verdicts


def accuracy_bounds(table: Table, cands: list[str], terms: Terms) -> dict[str, float]:
    """Per candidate, the figure *accurate* compares with ``-max_drop``: the one-sided lower bound of its paired
    decision-split difference to the reference at ``terms.confidence``, in points (0: the point estimate, from
    the rows' accuracies)."""
    ref = table[terms.reference]
    if terms.confidence == 0:
        return {c: round(100 * (table[c].acc - ref.acc), 4) for c in cands}
    return {c: round(lower_bound(table[c].correct, ref.correct, terms.confidence), 4) for c in cands}


def split_note(table: Table, cands: list[str], terms: Terms) -> str:
    """One line when the decision split is too small for ``max_drop`` at ``confidence`` (``stats.images_needed``
    at the candidates' median share of images discordant with the reference), else ''."""
    ref = table[terms.reference].correct
    n = len(ref)
    if not n or terms.max_drop <= 0:
        return ""
    shares = sorted(sum(a != b for a, b in zip(table[c].correct, ref)) / n for c in cands if table[c].correct)
    share = shares[(len(shares) - 1) // 2] if shares else 0.0  # the (lower) median candidate's
    need = images_needed(share, terms.max_drop, terms.confidence)
    if n >= need:
        return ""
    at = f"at {terms.confidence:.0%} confidence" if terms.confidence else "as a point estimate"
    return (f"the decision split (validation, {n:,} images; one image is {100 / n:.2g} points) is too small for "
            f"evaluate.max_drop = {terms.max_drop:g} points {at}: it would take about {need:,} images "
            f"({share:.1%} of them discordant with {terms.reference})")


@register_objective("smallest_fast")
def smallest_fast(table: Table, cands: list[str], terms: Terms) -> Choice:
    """The smallest accurate artifact that runs as fast as the speed reference (the module doc)."""
    t, ref_acc = terms, table[terms.reference].acc
    bounds = accuracy_bounds(table, cands, t)
    accurate = [c for c in cands if bounds[c] >= -t.max_drop - 1e-7]
    verdicts = speed_verdicts(table, cands, accurate, t)
    for c in cands:
        verdicts[c]["vs_reference_pt" if t.confidence == 0 else "lower_bound_pt"] = bounds[c]
    tie = _tie_key(table, cands, t)
    within = (f"within {t.max_drop:g} points of {t.reference}'s ({ref_acc:.4f})" if t.confidence == 0 else
              f"at most {t.max_drop:g} points below {t.reference}'s ({ref_acc:.4f}) at {t.confidence:.0%} confidence "
              f"(one-sided lower bound of the paired difference)")
    note = split_note(table, cands, t)
    sure = "" if t.confidence == 0 else f" at {t.confidence:.0%} confidence"
    if t.only is not None:  # a format the user asked for: the smallest accurate one, timings decide nothing
        if accurate:
            name = min(accurate, key=lambda c: (table[c].bytes, tie[c]))
            return Choice(name, f"the smallest {t.only} artifact (evaluate.ship) whose validation accuracy is {within}",
                          verdicts, note)
        return Choice(_most_accurate(table, cands), f"fallback: no {t.only} artifact (evaluate.ship) within "
                      f"{t.max_drop:g} validation points of {t.reference}{sure}; the most accurate one", verdicts, note)
    passing = [c for c in cands if verdicts[c]["accurate"] and verdicts[c]["fast"]]
    bs, ref = t.batch_sizes, t.speed_reference if t.speed_reference in table else None
    if passing:
        name = min(passing, key=lambda c: (table[c].bytes, tie[c]))
        rule = (f"the smallest artifact whose validation accuracy is {within} and whose min latency at batch "
                f"{', '.join(map(str, bs))} is within {(FAST_BAND - 1) * 100:.0f} % (or the measured spread) of "
                + (f"`{ref}`'s" if ref else "the fastest runtime of its network"))
    elif accurate:
        name = min(accurate, key=lambda c: (table[c].min_ms[max(bs)], tie[c]))
        rule = f"fallback: no artifact both accurate and fast; the fastest accurate one at batch {max(bs)}"
    else:
        name = _most_accurate(table, cands)
        rule = (f"fallback: no artifact within {t.max_drop:g} validation points of {t.reference}{sure}; "
                f"the most accurate one")
    return Choice(name, rule, verdicts, note)


@register_objective("most_accurate")
def most_accurate(table: Table, cands: list[str], terms: Terms) -> Choice:
    """The course's: the most accurate artifact whose file is at most ``max_bytes`` (the module doc)."""
    tie = _tie_key(table, cands, terms)
    fits = [c for c in cands if table[c].bytes <= terms.max_bytes]
    verdicts = {c: {"val_acc": table[c].acc, "bytes": table[c].bytes, "fits": c in fits} for c in cands}
    what = f"{terms.only} artifact (evaluate.ship)" if terms.only else "artifact"
    limit = f"{terms.max_bytes:,} bytes (evaluate.max_bytes)"
    if fits:
        name = min(fits, key=lambda c: (-table[c].acc, table[c].bytes, tie[c]))
        return Choice(name, f"the most accurate {what} on validation whose file is at most {limit}; ties: the "
                            f"smaller file", verdicts)
    name = min(cands, key=lambda c: (table[c].bytes, tie[c]))
    return Choice(name, f"fallback: no {what} of at most {limit}; the smallest one", verdicts)
