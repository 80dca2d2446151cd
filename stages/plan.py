"""plan: one prune round's width: for a round of width auto, the knee search's next probe (bisection of prune.search.ladder by the results of the rounds before it, read by the ship rule's test: evaluate.max_drop at evaluate.confidence); for a fixed one, params.yaml's. One file per round, so DVC reruns a round only when its width changed."""
from shrink.stage import stage

with stage("plan", __doc__, reads=("prune.rounds.{round}", "prune.search.ladder", "evaluate.max_drop",
                                   "evaluate.confidence"),
           inputs={"after": "run.json of the round (or the control) this one follows: the probes so far",
                   "curve": "the screen's curve (JSON; empty without a screen)"},
           outputs={"out": "the round's plan (JSON)"},
           options={"round": "round name: a key of prune.rounds in params.yaml"}) as (params, args):
    import sys

    from shrink.config import ParamsError
    from shrink.io import read_json, write_json
    from shrink.search import plan_round, probes_of, within

    if args.round not in params.prune.rounds:
        raise ParamsError(f"params.yaml: prune.rounds.{args.round}: no such round")
    r, ev = params.prune.rounds[args.round], params.evaluate
    probes = probes_of(args.after)
    entry = plan_round(args.round, r, params.prune.search.ladder, probes, ev.max_drop, ev.confidence,
                       read_json(args.curve)["curve"])
    for p in probes:
        print(f"plan: after {p['round']} (width {p['width']:g}): "
              f"{'within' if within(p, ev.max_drop, ev.confidence) else 'not within'} {ev.max_drop:g} pt of the "
              f"control", file=sys.stderr)
    print(f"plan: {args.round}: width {entry['width']:g} ({entry['source']})", file=sys.stderr)
    write_json(entry, args.out)
