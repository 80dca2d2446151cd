"""scratch: a prune round's architecture trained from random initialisation, with distill's recipe (KD from the teacher) for distill's epochs plus the round's: the same total epochs the pruned model trained (Liu et al. 2019, Scratch-E). Does inheriting the cut's weights matter? Optional: one stage per round named in prune.scratch."""
from shrink.stage import stage

with stage("scratch", __doc__, reads=("seed", "distill", "slim", "prune.rounds.{round}", "prune.scratch"),
           inputs={"arch": "the round's checkpoint: its architecture alone is read, never its weights",
                   "teacher": "teacher checkpoint (KD, as distill)", "data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"},
           options={"round": "a round named in prune.scratch (params.yaml)"}) as (params, args):
    import dataclasses

    from shrink.checkpoint import check_classes, load_checkpoint, model_from_checkpoint
    from shrink.config import ParamsError
    from shrink.data import load_meta
    from shrink.distill import make_kd_loss
    from shrink.distributed import launch
    from shrink.models import build_model
    from shrink.pipeline import Outputs, TrainJob, as_params, run_training
    from shrink.prune import bn_l1_hook
    from shrink.train import seed_everything

    if args.round not in params.prune.scratch:
        raise ParamsError(f"params.yaml: prune.scratch: {args.round!r} is not listed")
    p, slim, seed, r = params.distill, params.slim, params.seed, params.prune.rounds[args.round]
    cfg = dataclasses.replace(p.train, epochs=p.train.epochs + r.epochs)  # the pruned model's total
    launch(cfg, "distill.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    meta = load_meta(args.data)
    arch = load_checkpoint(args.arch)
    check_classes(arch, meta["classes"], args.arch)
    model = build_model(arch["model"], arch["num_classes"], **arch["model_kwargs"])  # fresh weights (the seed's)
    teacher = model_from_checkpoint(args.teacher)  # KDLoss.prepare moves it to the training device
    run_training(TrainJob(model, arch["model"], arch["model_kwargs"], cfg, seed,
                          as_params(seed=seed, distill=p, slim=slim,
                                    prune={"scratch": args.round, "rounds": {args.round: dataclasses.asdict(r)}}),
                          loss_fn=make_kd_loss(teacher, p.temperature, p.alpha), after_backward=bn_l1_hook(slim.l1)),
                 f"scratch@{args.round}", args.data, Outputs(args.out, args.metrics, args.live),
                 extra_metrics={"round": args.round, "epochs": cfg.epochs,
                                "width": arch["params"]["prune"]["rounds"][args.round]["width"]})
