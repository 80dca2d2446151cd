"""What ships (``shrink.ship``): today's rule (``smallest_fast``) branch by branch, the course's objective
(``most_accurate``), and properties every registered objective keeps, all on synthetic tables (no timing, no
files). The rows are written as the evaluate stage writes evaluate.json and latency.json (``_rows``) and handed
to ``ship.choose`` as the stage hands them (``choose_shipped``)."""
from __future__ import annotations

import dataclasses

import pytest

from shrink.config import EvaluateParams, ParamsError, validate
from shrink.evaluate import ship_sources, ship_terms
from shrink.ship import Row, choose, get_objective, list_objectives, register_objective


def table(ev: dict, lat: dict) -> dict[str, Row]:
    """The ship rule's table of evaluate.json / latency.json-shaped rows, as ``measure.ship_table`` builds it:
    ``<model>`` and ``<model>.ort`` are fp32 rows, ``<model>.<format>`` an artifact."""
    out = {}
    for name in dict.fromkeys([*lat, *ev]):
        model, _, fmt = name.partition(".")
        r, t = ev.get(name, {}), lat.get(name, {})
        fmt = fmt if fmt not in ("", "ort") else "fp32"
        out[name] = Row(name, model, fmt, r.get("bytes", 0), r.get("val_acc", 0.0),
                        min_ms={b: t[f"min_b{b}_ms"] for b in (1, 64) if t},
                        median_ms={b: t[f"latency_b{b}_ms"] for b in (1, 64) if t})
    return out


def old_rule(**kw) -> EvaluateParams:
    """``evaluate`` params of the rule before issue 34, which the tests below pin branch by branch: ``distill`` is
    the reference and *accurate* is a point estimate (``confidence`` 0). The bound's own tests follow them."""
    return EvaluateParams(**{"reference": "distill", "confidence": 0.0, **kw})


def choose_shipped(ev: dict, lat: dict, sources: list[str], p: EvaluateParams) -> tuple[str, str, dict]:
    c = choose(table(ev, lat), sources, ship_terms(p), p.objective)
    return c.name, c.rule, c.verdicts


# ---------------------------------------------------------------- smallest_fast, the default


def _rows(sizes: dict[str, int], accs: dict[str, float], mins: dict[str, tuple[float, float]], model: str = "prune_5",
          ev=None, lat=None):
    """ev / lat rows of ``model``'s four artifacts (validation accuracy ``accs``; test accuracy a different,
    made-up figure, which no choice may read), beside the reference ``distill`` (val 0.90)."""
    ev = ev or {"distill": {"val_acc": 0.90, "test_acc": 0.93, "bytes": 1_000_000}}
    ev |= {model: {"val_acc": 0.90, "test_acc": 0.80, "bytes": 800_000}}
    ev |= {f"{model}.{k}": {"val_acc": accs[k], "test_acc": 1.0 - accs[k], "bytes": sizes[k]} for k in sizes}
    lat = lat or {"distill.ort": _lat(0.2, 2.6)}
    lat |= {model: _lat(*mins["net"])}
    lat |= {f"{model}.{n[4:]}": _lat(*v) for n, v in mins.items() if n.startswith("net.")}
    return ev, lat


def _lat(b1: float, b64: float, spread: float = 1.02) -> dict[str, float]:
    return {"min_b1_ms": b1, "min_b64_ms": b64, "latency_b1_ms": b1 * spread, "latency_b64_ms": b64 * spread}


SIZES = {"int8w": 185_000, "int8": 230_000, "uint8": 180_000, "fp16": 400_000}
ACCS = {"int8w": 0.899, "int8": 0.897, "uint8": 0.898, "fp16": 0.90}
# "net" is the model's fp32 net in eager PyTorch, "net.<kind>" its artifacts
# (distill.ort runs at 0.2 / 2.6 ms: int8 QDQ beats it at batch 1 only, as on the default data)
MINS = {"net": (1.0, 9.0), "net.ort": (0.10, 1.30), "net.int8w": (0.104, 1.35),
        "net.int8": (0.12, 3.1), "net.uint8": (1.0, 9.0), "net.fp16": (1.0, 9.0)}


def test_ship_rule_smallest_of_the_accurate_and_fast():
    ev, lat = _rows(SIZES, ACCS, MINS)
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert name == "prune_5.int8w"  # uint8 is smaller but runs ~7x slower (eager)
    assert rule.startswith("the smallest artifact") and "0.5 points of distill's (0.9000)" in rule
    assert verdicts["prune_5.uint8"]["accurate"] and not verdicts["prune_5.uint8"]["fast"]
    assert verdicts["prune_5.int8w"]["fast"] and verdicts["prune_5.int8w"]["b64_vs_fastest"] == pytest.approx(1.35 / 1.3, abs=1e-3)
    assert verdicts["prune_5.int8w"]["b64_vs_distill.ort"] == pytest.approx(1.35 / 2.6, abs=1e-3)
    # int8w too inaccurate: nothing both accurate and fast -> the fastest accurate one
    ev, lat = _rows(SIZES, {**ACCS, "int8w": 0.88}, MINS)
    name, rule, _ = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert name == "prune_5.int8" and "fallback" in rule
    # if uint8 were fast, it would ship: the smallest file wins among the candidates
    ev, lat = _rows(SIZES, ACCS, {**MINS, "net.uint8": (0.1, 1.3)})
    assert choose_shipped(ev, lat, ["prune_5"], old_rule())[0] == "prune_5.uint8"
    # a busy machine: distill.ort's samples spread by 50 %, so int8w at 1.3x its min is not told apart
    ev, lat = _rows(SIZES, ACCS, {**MINS, "net.int8w": (0.26, 3.38)})
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert not verdicts["prune_5.int8w"]["fast"] and "fallback" in rule
    lat["distill.ort"].update(latency_b1_ms=0.3, latency_b64_ms=3.9)
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert name == "prune_5.int8w" and rule.startswith("the smallest")
    # slower than its own network in ORT fp32 (15 % at batch 64) but faster than distill.ort: fast, it ships
    ev, lat = _rows(SIZES, ACCS, {**MINS, "net.int8w": (0.08, 1.5)})
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert verdicts["prune_5.int8w"]["b64_vs_fastest"] == pytest.approx(1.5 / 1.3, abs=1e-3)
    assert name == "prune_5.int8w" and rule.endswith("of `distill.ort`'s")
    # without distill.ort (not measured) the bar is the fastest runtime of its own network
    del lat["distill.ort"]
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert not verdicts["prune_5.int8w"]["fast"] and "b64_vs_distill.ort" not in verdicts["prune_5.int8w"]
    ev, lat = _rows(SIZES, ACCS, MINS)
    del lat["distill.ort"]
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert name == "prune_5.int8w" and rule.endswith("of the fastest runtime of its network")
    # none accurate: the most accurate (on validation)
    ev, lat = _rows(SIZES, {k: 0.5 for k in ACCS} | {"int8": 0.6}, MINS)
    assert choose_shipped(ev, lat, ["prune_5"], old_rule())[0] == "prune_5.int8"
    # a kind asked for: the smallest accurate one of that kind, however slow (timings decide nothing)
    ev, lat = _rows(SIZES, ACCS, MINS)
    name, rule, _ = choose_shipped(ev, lat, ["prune_5"], old_rule(ship="uint8"))
    assert name == "prune_5.uint8" and rule.startswith("the smallest uint8 artifact (evaluate.ship)")


def test_ship_rule_across_rounds_reads_validation_and_the_reference_speed():
    """The smallest accurate and fast artifact of any round ships; accuracy means validation accuracy
    against distill's; fast means no slower than distill.ort."""
    ev, lat = _rows(SIZES, ACCS, MINS, model="distill")
    lat["distill"] = lat.pop("distill")  # the reference's eager row, from MINS
    lat["distill.ort"] = _lat(0.2, 2.6)
    small = {k: v // 4 for k, v in SIZES.items()}
    quick = {n: (b1 / 2, b64 / 2) for n, (b1, b64) in MINS.items()}
    ev, lat = _rows(small, ACCS, quick, model="prune_1", ev=ev, lat=lat)
    tiny = {k: v // 8 for k, v in SIZES.items()}
    ev, lat = _rows(tiny, {k: v - 0.004 for k, v in ACCS.items()}, quick, model="prune_2", ev=ev, lat=lat)
    sources = ["distill", "prune_1", "prune_2"]
    p = old_rule()
    assert choose_shipped(ev, lat, sources, p)[0] == "prune_2.int8w"  # val 0.895: just within 0.5 points
    # its validation accuracy drops below the bar: the next smallest that passes, whatever the test split says
    ev["prune_2.int8w"]["val_acc"] = 0.8949
    ev["prune_2.int8w"]["test_acc"] = 0.99
    assert choose_shipped(ev, lat, sources, p)[0] == "prune_1.int8w"
    # test figures decide nothing: a ship.Row has none (test_pipeline_e2e permutes the test labels of a real run)
    # a round faster than its own runtimes but slower than distill.ort is not fast
    lat["prune_1.int8w"] = _lat(0.3, 1.0)
    lat["prune_1.ort"] = _lat(0.29, 0.9)
    name, _, verdicts = choose_shipped(ev, lat, sources, p)
    assert verdicts["prune_1.int8w"]["b1_vs_distill.ort"] == 1.5 and not verdicts["prune_1.int8w"]["fast"]
    assert name == "prune_1.int8"  # the next smallest file that is accurate and as fast as distill.ort
    lat["prune_1.int8"] = _lat(0.3, 1.0)
    assert choose_shipped(ev, lat, sources, p)[0] == "distill.int8w"  # the unpruned student's own artifact


def test_a_rounds_from_scratch_twin_ships_when_quantize_lists_it_and_loses_a_tie_to_the_round():
    """``prune.scratch`` trains a round's architecture anew; with its twin in ``quantize.models`` the twin's
    artifacts are candidates after the rounds': the smaller accurate file ships, and a tie in bytes goes to
    the round (listed first)."""
    rounds = {"prune": {"rounds": {"r1": {"parent": "distill", "width": 0.5}}, "scratch": ["r1"]}}
    assert ship_sources(validate(rounds)) == ["control", "distill", "r1"]  # trained, measured, not a candidate
    listed = validate({**rounds, "quantize": {"models": ["distill", "control", "scratch_r1"]}})
    assert ship_sources(listed) == ["control", "distill", "r1", "scratch_r1"]
    assert listed.quantized_models == ["distill", "control", "r1", "scratch_r1"]
    ev, lat = _rows(SIZES, ACCS, MINS, model="control",
                    ev={"distill": {"val_acc": 0.90, "test_acc": 0.9, "bytes": 1_000_000}})
    quick = {n: (b1 / 2, b64 / 2) for n, (b1, b64) in MINS.items()}
    ev, lat = _rows({k: v // 4 for k, v in SIZES.items()}, ACCS, quick, model="r1", ev=ev, lat=lat)
    ev, lat = _rows({k: v // 5 for k, v in SIZES.items()}, ACCS, quick, model="scratch_r1", ev=ev, lat=lat)
    p = EvaluateParams(confidence=0.0)  # the reference is the control's val 0.90
    sources = ship_sources(listed)
    assert choose_shipped(ev, lat, sources, p)[0] == "scratch_r1.int8w"
    assert choose_shipped(ev, lat, ship_sources(validate(rounds)), p)[0] == "r1.int8w"
    for k in SIZES:  # files of the same sizes as the round's
        ev[f"scratch_r1.{k}"]["bytes"] = ev[f"r1.{k}"]["bytes"]
    assert choose_shipped(ev, lat, sources, p)[0] == "r1.int8w"


# ---------------------------------------------------------------- every branch of the ship rule


def test_ship_rule_forced_kind_must_exist_and_some_artifact_must():
    ev, lat = _rows(SIZES, ACCS, MINS)
    del ev["prune_5.int8"], lat["prune_5.int8"]  # no such file was measured
    with pytest.raises(ValueError, match=r"^no int8 artifact of prune_5 to ship"):
        choose_shipped(ev, lat, ["prune_5"], old_rule(ship="int8"))
    ev["prune_5.fp16"]["val_acc"] = 0.5
    name, rule, _ = choose_shipped(ev, lat, ["prune_5"], old_rule(ship="fp16"))
    assert name == "prune_5.fp16" and rule.startswith("fallback: no fp16 artifact (evaluate.ship) within 0.5")
    with pytest.raises(ValueError, match=r"^no quantized artifact of distill to ship"):
        choose_shipped(ev, lat, ["distill"], old_rule())


@pytest.mark.parametrize("acc,accurate", [(0.895, True), (0.8949, False)])
def test_ship_rule_max_drop_boundary(acc, accurate):
    """0.5 validation points below distill's (0.90) is still accurate; a hair below is not."""
    ev, lat = _rows(SIZES, {**ACCS, "int8w": acc}, MINS)
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule(max_drop=0.5))
    assert verdicts["prune_5.int8w"]["accurate"] is accurate
    assert (name == "prune_5.int8w") is accurate and rule.startswith("the smallest") is accurate
    if not accurate:  # uint8 is accurate but slow, int8 too: the fastest accurate one at batch 64
        assert name == "prune_5.int8" and rule.startswith("fallback: no artifact both accurate and fast")
    wide = choose_shipped(ev, lat, ["prune_5"], old_rule(max_drop=0.6))  # a looser budget takes it back
    assert wide[0] == "prune_5.int8w"


def test_ship_rule_nothing_accurate_ships_the_most_accurate_and_ties_go_by_size():
    ev, lat = _rows(SIZES, {"int8w": 0.5, "int8": 0.6, "uint8": 0.6, "fp16": 0.55}, MINS)
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert name == "prune_5.uint8"  # int8 and uint8 tie at 0.6 on validation: the smaller file
    assert rule == "fallback: no artifact within 0.5 validation points of distill; the most accurate one"
    assert not any(v["accurate"] for v in verdicts.values())


def test_ship_rule_ties_in_size_and_in_speed_go_by_kind_order():
    same = {k: 200_000 for k in SIZES}
    fast = {**MINS, **{f"net.{k}": (0.104, 1.35) for k in SIZES}}
    ev, lat = _rows(same, ACCS, fast)
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert all(v["accurate"] and v["fast"] for v in verdicts.values())
    assert name == "prune_5.int8w" and rule.startswith("the smallest")
    ev, lat = _rows(same, {**ACCS, "int8w": 0.5}, fast)  # without int8w: the next kind in the order
    assert choose_shipped(ev, lat, ["prune_5"], old_rule())[0] == "prune_5.int8"
    slow = {**MINS, **{f"net.{k}": (1.0, 9.0) for k in SIZES}}  # none fast: fastest accurate, tie by order
    ev, lat = _rows(SIZES, ACCS, slow)
    name, rule, _ = choose_shipped(ev, lat, ["prune_5"], old_rule())
    assert name == "prune_5.int8w" and "fallback" in rule


# ---------------------------------------------------------------- most_accurate, the course's objective


def test_most_accurate_within_the_byte_budget_ties_to_the_smaller_file():
    p = old_rule(objective="most_accurate", max_bytes=200_000)
    ev, lat = _rows(SIZES, ACCS, MINS)  # within 200,000 B: int8w (185,000 B, 0.899) and uint8 (180,000 B, 0.898)
    name, rule, verdicts = choose_shipped(ev, lat, ["prune_5"], p)
    assert name == "prune_5.int8w"  # slow or fast, timings decide nothing here
    assert rule.startswith("the most accurate artifact on validation whose file is at most 200,000 bytes")
    assert verdicts["prune_5.int8w"] == {"val_acc": 0.899, "bytes": 185_000, "fits": True}
    assert not verdicts["prune_5.fp16"]["fits"]  # the most accurate (0.90) but 400,000 B
    ev["prune_5.uint8"]["val_acc"] = 0.899  # a tie in accuracy: the smaller file
    assert choose_shipped(ev, lat, ["prune_5"], p)[0] == "prune_5.uint8"
    ev["prune_5.uint8"]["bytes"] = 185_000  # and in bytes too: the tie order (int8w first)
    assert choose_shipped(ev, lat, ["prune_5"], p)[0] == "prune_5.int8w"
    # no file within the budget: the smallest, and the rule says so
    ev, lat = _rows(SIZES, ACCS, MINS)
    name, rule, _ = choose_shipped(ev, lat, ["prune_5"], old_rule(objective="most_accurate", max_bytes=1000))
    assert name == "prune_5.uint8" and rule.startswith("fallback: no artifact of at most 1,000 bytes")
    # evaluate.ship: that format's artifacts only
    name, rule, _ = choose_shipped(ev, lat, ["prune_5"], old_rule(objective="most_accurate", ship="fp16",
                                                                         max_bytes=10**6))
    assert name == "prune_5.fp16" and "fp16 artifact (evaluate.ship)" in rule


# ---------------------------------------------------------------- every registered objective


def rounds_table() -> tuple[dict, dict, list[str]]:
    """The unpruned student and two rounds, each with every format's artifact (smaller and quicker per round)."""
    ev, lat = _rows(SIZES, ACCS, MINS, model="distill")
    for i, r in enumerate(("prune_1", "prune_2"), start=1):
        ev, lat = _rows({k: v // (4 * i) for k, v in SIZES.items()}, {k: v - 0.002 * i for k, v in ACCS.items()},
                        {n: (b1 / (i + 1), b64 / (i + 1)) for n, (b1, b64) in MINS.items()}, model=r, ev=ev, lat=lat)
    return ev, lat, ["distill", "prune_1", "prune_2"]


@pytest.mark.parametrize("objective", list_objectives())
def test_every_objective_chooses_one_candidate_purely(objective):
    """Whatever it optimises, an objective ships one of the candidates (of the one format asked for, when one
    is), gives each candidate a verdict, leaves the table alone, and answers the same table the same way."""
    ev, lat, sources = rounds_table()
    rows = table(ev, lat)
    snapshot = dict(rows)
    for ship in ("auto", "uint8", "int8w"):
        p = old_rule(objective=objective, ship=ship)
        first = choose(rows, sources, ship_terms(p), objective)
        assert rows == snapshot and choose(rows, sources, ship_terms(p), objective) == first
        cands = {n for n, r in rows.items() if r.model in sources and r.format != "fp32" and ship in ("auto", r.format)}
        assert first.name in cands and set(first.verdicts) == cands and first.rule
    with pytest.raises(ValueError, match="^no int8 artifact of prune_9 to ship"):
        choose(rows, ["prune_9"], ship_terms(old_rule(objective=objective, ship="int8")), objective)
    assert validate({"evaluate": {"objective": objective}}).evaluate.objective == objective


def test_objective_registry_refuses_a_second_entry_and_names_the_known_ones():
    with pytest.raises(ValueError, match="already registered"):
        register_objective("smallest_fast")(lambda table, cands, terms: None)
    with pytest.raises(KeyError, match=r"unknown ship objective 'cheapest' \(known: smallest_fast, most_accurate\)"):
        get_objective("cheapest")
    with pytest.raises(ParamsError, match="evaluate.objective: must be one of smallest_fast, most_accurate"):
        validate({"evaluate": {"objective": "cheapest"}})


# ---------------------------------------------------------------- the bound (evaluate.confidence) and the control


def _correct(n: int, right: int, n_ab: int = 0, n_ba: int = 0) -> tuple[bool, ...]:
    """Per-image correctness: the reference's (its first ``right`` of ``n`` images right), changed on ``n_ab``
    images the reference gets wrong (now right) and ``n_ba`` it gets right (now wrong)."""
    out = [i < right for i in range(n)]
    for i in range(n_ab):
        out[right + i] = True
    for i in range(n_ba):
        out[i] = False
    return tuple(out)


def bound_table(n: int = 6000, noisy: tuple[int, int] = (300, 318), steady: tuple[int, int] = (3, 21)) -> dict:
    """The control (val 0.90 on ``n`` images) and two artifacts of prune_5, both 0.3 points below it: int8w (the
    smaller) differs from it on ~10 % of the images, int8 on 0.4 %. Every runtime is as fast as distill.ort."""
    ref = _correct(n, int(0.9 * n))
    fast = {"min_ms": {1: 0.1, 64: 1.0}, "median_ms": {1: 0.1, 64: 1.0}}
    rows = {"control": Row("control", "control", "fp32", 1_000_000, sum(ref) / n, ref, **fast),
            "distill.ort": Row("distill.ort", "distill", "fp32", 1_000_000, 0.0, (), **fast)}
    for fmt, size, (n_ab, n_ba) in (("int8w", 100_000, noisy), ("int8", 120_000, steady)):
        c = _correct(n, int(0.9 * n), n_ab, n_ba)
        rows[f"prune_5.{fmt}"] = Row(f"prune_5.{fmt}", "prune_5", fmt, size, sum(c) / n, c, **fast)
    return rows


def test_ship_rule_keeps_the_accuracy_when_the_lower_bound_of_the_paired_difference_does():
    """The default rule: an artifact is accurate when the one-sided 95 % lower bound of (artifact - control) on
    validation is >= -max_drop. Two artifacts 0.3 points below: the one that disagrees with the control on 10 %
    of the images has a bound near -1 point, so the larger, steadier one ships. Ignore the bound (confidence 0,
    the point estimate) and the smaller one ships: this test fails then."""
    from shrink.stats import lower_bound

    rows, terms = bound_table(), ship_terms(EvaluateParams())
    assert terms.reference == "control" and terms.confidence == 0.95 and terms.speed_reference == "distill.ort"
    c = choose(rows, ["prune_5"], terms)
    v = c.verdicts
    assert v["prune_5.int8w"]["lower_bound_pt"] == pytest.approx(
        lower_bound(rows["prune_5.int8w"].correct, rows["control"].correct, 0.95), abs=1e-4)
    assert v["prune_5.int8w"]["lower_bound_pt"] < -0.5 < v["prune_5.int8"]["lower_bound_pt"] < -0.3
    assert not v["prune_5.int8w"]["accurate"] and v["prune_5.int8"]["accurate"]
    assert c.name == "prune_5.int8" and "below control's (0.9000) at 95% confidence" in c.rule and c.note == ""
    point = choose(rows, ["prune_5"], dataclasses.replace(terms, confidence=0.0))
    assert point.name == "prune_5.int8w" and point.verdicts["prune_5.int8w"]["vs_reference_pt"] == -0.3
    # neither accurate at a stricter tolerance: the most accurate ships, and the rule names the confidence
    strict = choose(rows, ["prune_5"], dataclasses.replace(terms, max_drop=0.1))
    assert strict.rule == "fallback: no artifact within 0.1 validation points of control at 95% confidence; " \
                          "the most accurate one"


@pytest.mark.parametrize("confidence", [0.95, 0.0])
def test_a_decision_split_too_small_for_the_tolerance_is_said_with_the_images_it_would_take(confidence):
    """30 validation images: one image is 3.3 points, more than max_drop's 0.5; the choice says so in one line,
    with the images it would take (stats.images_needed); 6,000 steady images need no note."""
    from shrink.stats import images_needed

    terms = dataclasses.replace(ship_terms(EvaluateParams()), confidence=confidence)
    small = choose(bound_table(30, noisy=(1, 1), steady=(0, 0)), ["prune_5"], terms)
    need = images_needed(0.0, 0.5, confidence)  # the (lower) median candidate's share of discordant images: none
    assert need == 200 and "\n" not in small.note  # one image must weigh less than the tolerance
    assert small.note.startswith("the decision split (validation, 30 images; one image is 3.3 points) is too small "
                                 "for evaluate.max_drop = 0.5 points") and f"about {need:,} images" in small.note
    assert ("at 95% confidence" if confidence else "as a point estimate") in small.note
    steady = bound_table(noisy=(3, 21))
    assert choose(steady, ["prune_5"], terms).note == ""
