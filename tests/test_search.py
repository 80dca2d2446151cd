"""The knee search (src/shrink/search.py): which widths the plan picks from a screen's curve, the params it
accepts, and the tiny run's screen, plan and rounds agreeing with each other."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT
from shrink.data import load_split
from shrink.config import RoundParams, UserError, load_params
from shrink.search import crossing, pick_widths, plan, planned_width, resolve, within
from shrink.stats import lower_bound_counts

LADDER = [0.7, 0.5, 0.35, 0.25, 0.18]


def curve(drops_pt: list[float]) -> list[dict]:
    """A screen's rows over LADDER, each ``drop`` points below the uncut parent (point estimates)."""
    return [{"width": w, "drop_pt": d} for w, d in zip(LADDER, drops_pt)]


@pytest.mark.parametrize("drops,k,picks", [
    ([0.0, 0.2, 0.4, 0.9, 2.0], 3, [0.5, 0.35, 0.25]),    # crossing 0.35: its wider neighbour, it, the next narrower
    ([0.0, 0.2, 0.4, 0.9, 2.0], 2, [0.5, 0.35]),          # the crossing and its wider neighbour
    ([0.0, 0.2, 0.4, 0.9, 2.0], 1, [0.35]),               # one round: the crossing itself
    ([0.6, 0.2, 0.1, 0.1, 0.1], 3, [0.7, 0.5, 0.35]),     # nothing within: the widest
    ([0.0, 0.1, 0.2, 0.3, 0.4], 3, [0.35, 0.25, 0.18]),   # everything within: the narrowest
    ([0.0, 0.9, 0.1, 0.1, 0.1], 2, [0.7, 0.5]),           # the first failure ends the walk (noise below it aside)
    ([-0.3, 0.4, 0.5, 0.51, 3.0], 3, [0.5, 0.35, 0.25]),  # exactly max_drop is within
])
def test_the_plan_brackets_the_crossing(drops, k, picks):
    assert pick_widths(curve(drops), 0.5, k) == picks


def test_crossing_and_plan_keep_fixed_rounds_and_the_order_of_auto_ones():
    rows = curve([0.0, 0.2, 0.4, 0.9, 2.0])
    assert crossing(rows, 0.5) == 2 and crossing(curve([0.6] * 5), 0.5) == -1
    rounds = {"a": RoundParams("distill", "auto"), "fixed": RoundParams("distill", 0.05), "b": RoundParams("distill", "auto")}
    entries = plan({"curve": rows}, rounds, 0.5)
    assert {n: (e["width"], e["source"]) for n, e in entries.items()} == {
        "a": (0.5, "search"), "fixed": (0.05, "params"), "b": (0.35, "search")}


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
    estimate; its one-sided 95 % lower bound (about -0.71) is not, so the crossing moves one width wider."""
    row = {"width": 0.35, "drop_pt": 0.33, "val_n": 6000, "val_only_cut": 90, "val_only_uncut": 110}
    assert within(row, 0.5, 0.0) and not within(row, 0.5, 0.95)
    assert lower_bound_counts(6000, 90, 110, 0.95) == pytest.approx(-0.71, abs=0.02)
    wide = {"width": 0.5, "drop_pt": 0.0, "val_n": 6000, "val_only_cut": 50, "val_only_uncut": 50}
    assert pick_widths([wide, row], 0.5, 1, 0.95) == [0.5] and pick_widths([wide, row], 0.5, 1, 0.0) == [0.35]


@pytest.mark.parametrize("rounds,search,key,words", [
    ({"p": {"parent": "student", "width": "auto"}}, None, "prune.rounds.p.parent", "prune.search.parent"),
    ({"p": {"parent": "distill", "width": "auto"}, "q": {"parent": "distill", "width": "auto"}}, {"ladder": [0.5]},
     "prune.search.ladder", "2 round(s) of width auto"),
    ({"p": {"parent": "distill", "width": "wide"}}, None, "prune.rounds.p.width", "auto"),
    ({}, {"ladder": [0.5, 1.0]}, "prune.search.ladder", "(0, 1)"),
    ({}, {"ladder": [0.5, 0.5]}, "prune.search.ladder", "repeat"),
    ({}, {"epochs": 0}, "prune.search.epochs", ">= 1"),
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
    """The screen fine-tuned every ladder width and the uncut parent and wrote validation figures only; the plan
    is what ``plan`` makes of that curve; the auto round was cut to it; the report shows the screen."""
    params = load_params(tiny_run / "params.yaml")
    c = json.loads((tiny_run / "search/curve.json").read_text())
    assert [r["width"] for r in c["curve"]] == sorted(params.prune.search.ladder, reverse=True)
    assert c["reference"]["width"] == 1.0 and c["epochs"] == params.prune.search.epochs
    assert not any("test" in k for r in [c["reference"], *c["curve"]] for k in r)  # nothing that decides reads test
    n_val = len(load_split(tiny_run / "data/prepared", "val").labels)
    assert all(r["val_n"] == n_val and r["val_only_cut"] + r["val_only_uncut"] <= n_val for r in c["curve"])
    assert all(0.25 < r["val_acc"] <= 1 and r["int8w_bytes"] < c["reference"]["int8w_bytes"] for r in c["curve"])
    expected = plan(c, params.prune.rounds, params.evaluate.max_drop, params.evaluate.confidence)
    written = {n: json.loads((tiny_run / f"search/plan/{n}.json").read_text()) for n in params.prune.rounds}
    assert written == expected and any(e["source"] == "search" for e in written.values())
    for name, e in written.items():
        assert json.loads((tiny_run / f"models/{name}.run.json").read_text())["width"] == e["width"], name
    report = (tiny_run / "report.md").read_text()
    assert "## The knee search" in report and "charts/screen.png" in report
    assert (tiny_run / "charts/screen.png").stat().st_size > 10_000
