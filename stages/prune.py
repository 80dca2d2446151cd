"""prune: one pruning round: rank channels by prune.criterion (Network Slimming's BatchNorm |gamma| by default), cut them, rebuild a smaller dense net of the same arch, fine-tune; then record the round's probe (validation, paired with the control) for the next round's plan."""
from shrink.stage import stage

with stage("prune", __doc__, reads=("seed", "slim", "prune.criterion", "prune.bnless_criterion", "prune.mode",
                                    "prune.min_channels", "prune.blocks", "prune.round_to", "prune.finetune",
                                    "prune.rounds.{round}"),
           inputs={"parent": "checkpoint this round cuts",
                   "plan": "the round's plan (search/plan/<round>.json): its width and the probes before it",
                   "control": "the control's checkpoint (the probe's reference)",
                   "teacher": "teacher checkpoint (fine-tuning with KD)", "data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary and <stem>.run.json (with the probes) beside it",
                    "metrics": "metrics JSON", "live": "dvclive folder for per-epoch curves"},
           options={"round": "round name: a key of prune.rounds in params.yaml"}) as (params, args):
    import dataclasses
    from pathlib import Path

    from shrink.config import ParamsError
    from shrink.distributed import is_rank_zero, launch
    from shrink.io import read_json, write_json
    from shrink.rounds import run_round
    from shrink.screen import probe
    from shrink.search import PROBES, planned_width

    if args.round not in params.prune.rounds:
        raise ParamsError(f"params.yaml: prune.rounds.{args.round}: no such round")
    r = params.prune.rounds[args.round]
    width = planned_width(args.plan, args.round, r)
    cfg = dataclasses.replace(params.prune, rounds={**params.prune.rounds, args.round: dataclasses.replace(
        r, width=width)})
    launch(params.prune.finetune.train, "prune.finetune.train")  # nproc > 1: this command again, under torchrun
    run_round(args.parent, cfg, args.round, slim_params=params.slim, seed=params.seed, data_dir=args.data,
              teacher=args.teacher, out=args.out, metrics_path=args.metrics, live_dir=args.live)
    if is_rank_zero():  # under torchrun, rank 0 wrote the outputs
        run = Path(args.out).with_suffix(".run.json")
        figures = read_json(run)
        figures[PROBES] = [*read_json(args.plan)[PROBES], probe(args.round, width, args.out, args.control, args.data)]
        write_json(figures, run)
