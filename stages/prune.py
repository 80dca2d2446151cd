"""prune: one pruning round: rank channels by prune.criterion (Network Slimming's BatchNorm |gamma| by default), cut them, rebuild a smaller dense net of the same arch, fine-tune."""
from shrink.stage import stage

with stage("prune", __doc__, reads=("seed", "slim", "prune.criterion", "prune.bnless_criterion", "prune.mode",
                                    "prune.min_channels", "prune.blocks", "prune.round_to", "prune.finetune",
                                    "prune.rounds.{round}"),
           inputs={"parent": "checkpoint this round cuts", "plan": "the round's plan (plans/<round>.json): its width", "teacher": "teacher checkpoint (fine-tuning with KD)",
                   "data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"},
           options={"round": "round name: a key of prune.rounds in params.yaml"}) as (params, args):
    import dataclasses

    from shrink.config import ParamsError
    from shrink.distributed import launch
    from shrink.rounds import run_round
    from shrink.search import planned_width

    if args.round not in params.prune.rounds:
        raise ParamsError(f"params.yaml: prune.rounds.{args.round}: no such round")
    r = params.prune.rounds[args.round]
    cfg = dataclasses.replace(params.prune, rounds={**params.prune.rounds, args.round: dataclasses.replace(
        r, width=planned_width(args.plan, args.round, r))})
    launch(params.prune.finetune.train, "prune.finetune.train")  # nproc > 1: this command again, under torchrun
    run_round(args.parent, cfg, args.round, slim_params=params.slim, seed=params.seed, data_dir=args.data,
              teacher=args.teacher, out=args.out, metrics_path=args.metrics, live_dir=args.live)
