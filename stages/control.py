"""control: the equal-budget control: the unpruned parent fine-tuned with exactly a prune round's recipe (prune.finetune) and epochs (prune.control), and not cut; what each round is measured against."""
from shrink.stage import stage

with stage("control", __doc__, reads=("seed", "slim", "prune.blocks", "prune.finetune", "prune.control"),
           inputs={"parent": "checkpoint it fine-tunes (prune.control.parent)",
                   "teacher": "teacher checkpoint (fine-tuning with KD)", "data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"}) as (params, args):
    from shrink.config import CONTROL
    from shrink.distributed import launch
    from shrink.rounds import run_round

    launch(params.prune.finetune.train, "prune.finetune.train")  # nproc > 1: this command again, under torchrun
    run_round(args.parent, params.prune, CONTROL, slim_params=params.slim, seed=params.seed, data_dir=args.data,
              teacher=args.teacher, out=args.out, metrics_path=args.metrics, live_dir=args.live)
