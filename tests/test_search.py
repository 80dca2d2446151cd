"""The knee search (src/shrink/search.py): which widths the plan picks from a screen's curve, the params it
accepts, and the tiny run's screen, plan and rounds agreeing with each other."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT
from shrink.data import load_split
from shrink.config import RoundParams, UserError, load_params
from shrink.search import bracket, crossing, next_width, plan_round, planned_width, resolve, within
from shrink.stats import lower_bound_counts

LADDER = [0.7, 0.5, 0.35, 0.25, 0.18]
RUNGS = [0.85, 0.7, 0.5, 0.35, 0.25, 0.18, 0.13, 0.09, 0.065]  # the default ladder


def curve(drops_pt: list[float]) -> list[dict]:
    """A screen's rows over LADDER, each ``drop`` points below the uncut parent (point estimates)."""
    return [{"width": w, "drop_pt": d} for w, d in zip(LADDER, drops_pt)]


def search(knee: float, rounds: int = 3, screened: list[dict] | None = None) -> list[float]:
    """The widths ``rounds`` auto rounds probe when every width >= ``knee`` keeps the tolerance (a drop of 0.1
    point) and every narrower one does not (1 point)."""
    probes: list[dict] = []
    for _ in range(rounds):
        w = next_width(RUNGS, probes, 0.5, 0.0, screened)
        probes.append({"round": f"r{len(probes)}", "width": w, "drop_pt": 0.1 if w >= knee else 1.0})
    return [p["width"] for p in probes]


@pytest.mark.parametrize("knee,probed", [
    (0.5, [0.25, 0.7, 0.5]),      # the default data's first parent (docs/experiments/2026-12-06-knee-search.md)
    (0.7, [0.25, 0.7, 0.5]),      # the README run's parent
    (0.25, [0.25, 0.13, 0.18]),   # the default data at 16 px
    (0.85, [0.25, 0.7, 0.85]),    # mobilenet_v3_small; the default data with 6,000 training images
    (0.35, [0.25, 0.7, 0.5]),     # 0.35 untried, but 0.5 is the narrowest probed within: one rung wide
    (0.09, [0.25, 0.13, 0.09]),
    (0.065, [0.25, 0.13, 0.09]),  # 0.065 untried: one rung wide
    (1.0, [0.25, 0.7, 0.85]),     # nothing keeps the tolerance: the control ships
])
def test_three_rounds_bisect_the_ladder_to_its_knee(knee, probed):
    """Nine rungs, three rounds: each probe halves the rungs still between the narrowest width within the
    tolerance and the widest not, so the narrowest rung within (the knee) is probed but in two cases."""
    assert search(knee) == probed


def test_a_bracket_of_neighbouring_rungs_is_refined_between_them():
    assert search(1.0, 4)[3] == pytest.approx(0.9220, abs=1e-4)     # sqrt(1.0 x 0.85): between the control and 0.85
    assert search(0.7, 4)[3] == pytest.approx(0.5916, abs=1e-4)     # sqrt(0.7 x 0.5)
    assert search(0.0, 5)[3:] == [0.065, pytest.approx(0.0469, abs=1e-4)]  # every rung within: one more step down


def test_the_bracket_ignores_a_failure_wider_than_a_pass():
    probes = [{"round": "a", "width": 0.5, "drop_pt": 0.9}, {"round": "b", "width": 0.25, "drop_pt": 0.0}]
    assert bracket(probes, 0.5) == (0.25, 0.0)
    assert next_width(RUNGS, probes, 0.5) == 0.13  # between 0.25 and nothing: 0.18, 0.13, 0.09, 0.065 -> 0.13


def test_the_screen_sets_the_first_probe_at_its_crossing():
    rows = curve([0.0, 0.2, 0.4, 0.9, 2.0])
    assert crossing(rows, 0.5) == 2 and crossing(curve([0.6] * 5), 0.5) == -1
    assert crossing(curve([0.0, 0.9, 0.1, 0.1, 0.1]), 0.5) == 0  # the first failure ends the walk
    assert search(0.5, 2, rows) == [0.35, 0.7]  # the crossing first, then the bisection (the wider middle)
    assert search(0.5, 1, curve([0.6] * 5)) == [0.25]  # nothing within: the ladder's middle


def test_fixed_rounds_keep_their_width_and_pass_the_probes_on():
    probes = [{"round": "a", "width": 0.25, "drop_pt": 1.0}]
    entry = plan_round("f", RoundParams("distill", 0.05, after="a"), RUNGS, probes, 0.5)
    assert entry == {"round": "f", "width": 0.05, "source": "params", "probes": probes}
    assert plan_round("g", RoundParams("distill", "auto"), RUNGS, probes, 0.5)["width"] == 0.7


def params_with(tmp_path, rounds: dict, search: dict | None = None):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["prune"]["rounds"] = rounds
    if search is not None:
        raw["prune"]["search"].update(search)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_the_plan_reads_a_cut_by_the_ship_rules_lower_bound():
    """6,000 images, the cut right alone on 90 and the uncut alone on 110: -0.33 pt, within 0.5 as a point
    estimate; its one-sided 95 % lower bound (about -0.71) is not, so the next probe goes wider, not narrower."""
    row = {"width": 0.35, "drop_pt": 0.33, "val_n": 6000, "val_only_cut": 90, "val_only_uncut": 110}
    assert within(row, 0.5, 0.0) and not within(row, 0.5, 0.95)
    assert lower_bound_counts(6000, 90, 110, 0.95) == pytest.approx(-0.71, abs=0.02)
    assert next_width(RUNGS, [row], 0.5, 0.95) == 0.7 and next_width(RUNGS, [row], 0.5, 0.0) == 0.13


@pytest.mark.parametrize("rounds,search,key,words", [
    ({"p": {"parent": "student", "width": "auto"}}, None, "prune.rounds.p.parent", "prune.search.parent"),
    ({"p": {"parent": "distill", "width": "auto"}}, {"ladder": []}, "prune.search.ladder", "at least one"),
    ({"p": {"parent": "distill", "width": 0.5, "after": "q"}, "q": {"parent": "distill", "width": 0.3}}, None,
     "prune.rounds.p.after", "listed before p"),
    ({"p": {"parent": "distill", "width": 0.5, "after": "p"}}, None, "prune.rounds.p.after", "control"),
    ({"p": {"parent": "distill", "width": "wide"}}, None, "prune.rounds.p.width", "auto"),
    ({}, {"ladder": [0.5, 1.0]}, "prune.search.ladder", "(0, 1)"),
    ({}, {"ladder": [0.5, 0.5]}, "prune.search.ladder", "repeat"),
    ({}, {"epochs": -1}, "prune.search.epochs", ">= 0"),
])
def test_search_params_are_checked(tmp_path, rounds, search, key, words):
    with pytest.raises(UserError) as e:
        params_with(tmp_path, rounds, search)
    assert key in str(e.value) and words in str(e.value)


def test_a_stale_or_missing_plan_names_its_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"round": "p", "width": 0.3, "source": "params"}))
    assert planned_width(f, "p", RoundParams("distill", "auto")) == 0.3
    with pytest.raises(UserError, match="stale plan"):
        planned_width(f, "p", RoundParams("distill", 0.2))
    with pytest.raises(UserError, match="not 'q'"):
        planned_width(f, "q", RoundParams("distill", "auto"))
    with pytest.raises(UserError, match=r"q\.json: no plan for prune\.rounds\.q"):
        resolve({"q": RoundParams("distill", "auto")}, tmp_path)


def test_the_tiny_run_screens_plans_and_prunes_at_the_planned_width(tiny_run):
    """The screen fine-tuned every ladder width and the uncut parent and wrote validation figures only; each plan
    is what ``plan_round`` makes of the probes before it (the run.json of its ``after``); each round was cut to its
    plan's width and recorded its probe after them, on validation alone; the report shows the search."""
    params = load_params(tiny_run / "params.yaml")
    ev = params.evaluate
    c = json.loads((tiny_run / "search/curve.json").read_text())
    assert [r["width"] for r in c["curve"]] == sorted(params.prune.search.ladder, reverse=True)
    assert c["reference"]["width"] == 1.0 and c["epochs"] == params.prune.search.epochs
    n_val = len(load_split(tiny_run / "data/prepared", "val").labels)
    assert all(r["val_n"] == n_val and r["val_only_cut"] + r["val_only_uncut"] <= n_val for r in c["curve"])
    assert all(0.25 < r["val_acc"] <= 1 and r["int8w_bytes"] < c["reference"]["int8w_bytes"] for r in c["curve"])
    before: list = []
    for name, r in params.prune.rounds.items():
        written = json.loads((tiny_run / f"search/plan/{name}.json").read_text())
        after = json.loads((tiny_run / f"models/{r.after}.run.json").read_text()).get("probes", [])
        assert after == before, name  # the chain: control, prune_1, prune_2
        assert written == plan_round(name, r, params.prune.search.ladder, after, ev.max_drop, ev.confidence,
                                     c["curve"]), name
        run = json.loads((tiny_run / f"models/{name}.run.json").read_text())
        assert run["width"] == written["width"] and run["probes"][:-1] == after, name
        own = run["probes"][-1]
        assert own["round"] == name and own["width"] == run["width"] and own["val_n"] == n_val, name
        # the same weights' validation accuracy, batched otherwise (a near tie may flip on another ISA: one image)
        assert own["val_acc"] == pytest.approx(run["val_acc"], abs=1.01 / n_val) and own["params"] == run["params"], name
        before = run["probes"]
    assert json.loads((tiny_run / "search/plan/prune_1.json").read_text())["source"] == "search"
    assert not any("test" in k for r in [c["reference"], *c["curve"], *before] for k in r)  # what decides: val only
    report = (tiny_run / "report.md").read_text()
    assert "## The knee search" in report and "## The screen" in report and "charts/knee.png" in report
    assert (tiny_run / "charts/knee.png").stat().st_size > 10_000
