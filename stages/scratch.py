"""scratch: a prune round's architecture trained from random initialisation, with distill's recipe (KD from the teacher) for distill's epochs plus the round's: the same total epochs the pruned model trained (Liu et al. 2019, Scratch-E). Does inheriting the cut's weights matter? Optional: one stage per round named in prune.scratch."""
from shrink.stage import stage

with stage("scratch", __doc__, reads=("seed", "distill", "slim", "prune.rounds.{round}"),
           inputs={"arch": "the round's checkpoint: its architecture alone is read, never its weights",
                   "teacher": "teacher checkpoint (KD, as distill)", "data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"},
           options={"round": "a round of prune.rounds (params.yaml); dvc.yaml runs those named in prune.scratch"}) \
        as (params, args):
    import dataclasses

    from shrink.checkpoint import check_classes, load_checkpoint
    from shrink.config import ParamsError
    from shrink.data import load_meta
    from shrink.distill import distill_job, load_teacher
    from shrink.distributed import launch
    from shrink.models import build_model
    from shrink.pipeline import Outputs, as_params, run_training
    from shrink.train import seed_everything

    if args.round not in params.prune.rounds:
        raise ParamsError(f"params.yaml: prune.rounds: no round {args.round!r}")
    p, seed, r = params.distill, params.seed, params.prune.rounds[args.round]
    cfg = dataclasses.replace(p.train, epochs=p.train.epochs + r.epochs)  # the pruned model's total
    launch(cfg, "distill.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    meta = load_meta(args.data)
    arch = load_checkpoint(args.arch)
    check_classes(arch, meta["classes"], args.arch)
    model = build_model(arch["model"], arch["num_classes"], **arch["model_kwargs"])  # fresh weights (the seed's)
    teacher = load_teacher(args.teacher, meta["classes"])  # after the student, whose init the seed fixes
    run_training(distill_job(model, arch["model"], arch["model_kwargs"], cfg, seed,
                             as_params(seed=seed, distill=p, slim=params.slim,
                                       prune={"scratch": args.round, "rounds": {args.round: dataclasses.asdict(r)}}),
                             teacher, params),
                 f"scratch@{args.round}", args.data, Outputs(args.out, args.metrics, args.live),
                 extra_metrics={"round": args.round, "epochs": cfg.epochs,
                                "width": arch["params"]["prune"]["rounds"][args.round]["width"]})
