"""plan: each prune round's width: the knee search's pick for a round of width auto (read from the screen's curve by the ship rule's test: evaluate.max_drop at evaluate.confidence), params.yaml's for a fixed one; one file per round, so DVC reruns a round only when its width changed."""
from shrink.stage import stage

with stage("plan", __doc__, reads=("prune.rounds", "evaluate.max_drop", "evaluate.confidence"),
           inputs={"curve": "the screen's curve (JSON)"},
           outputs={"out": "folder of plans, <round>.json each"}) as (params, args):
    import sys

    from shrink.config import UserError
    from shrink.io import read_json
    from shrink.search import plan, write_plan

    curve = read_json(args.curve)
    auto = [n for n, r in params.prune.rounds.items() if r.auto]
    if auto and not curve["curve"]:
        raise UserError(f"{args.curve}: no width screened (prune.search.ladder is empty) but "
                         f"{', '.join(auto)} have width auto")
    entries = plan(curve, params.prune.rounds, params.evaluate.max_drop, params.evaluate.confidence)
    for e in entries.values():
        print(f"plan: {e['round']}: width {e['width']:g} ({e['source']})", file=sys.stderr)
    write_plan(entries, args.out)
