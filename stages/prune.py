"""prune: one Network Slimming round: cut channels by BatchNorm |gamma|, rebuild a smaller dense net of the same arch, fine-tune."""
from shrink.stage import stage

with stage("prune", __doc__, reads=("seed", "slim", "prune.mode", "prune.min_channels", "prune.blocks", "prune.round_to",
                                    "prune.finetune", "prune.rounds.{round}"),
           inputs={"parent": "checkpoint this round cuts", "teacher": "teacher checkpoint (fine-tuning with KD)",
                   "data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"},
           options={"round": "round name: a key of prune.rounds in params.yaml"}) as (params, args):
    import dataclasses

    from shrink.checkpoint import load_checkpoint, model_from_checkpoint
    from shrink.config import ParamsError
    from shrink.data import load_meta, load_split, normalizer
    from shrink.distill import make_kd_loss
    from shrink.distributed import launch
    from shrink.pipeline import Outputs, TrainJob, as_params, run_training
    from shrink.prune import base_channels_of, bn_l1_hook, keep_as_lists, rebuild_kwargs, slim
    from shrink.train import loss_and_accuracy, seed_everything

    if args.round not in params.prune.rounds:
        raise ParamsError(f"params.yaml: prune.rounds.{args.round}: no such round")
    cfg, rnd, ft, seed = params.prune.only(args.round), params.prune.rounds[args.round], params.prune.finetune, params.seed
    launch(ft.train, "prune.finetune.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    parent = load_checkpoint(args.parent)
    model = model_from_checkpoint(parent)
    base_channels = parent.get("base_channels") or base_channels_of(model, cfg.blocks)  # the unpruned net's
    model, keep = slim(model, rnd.width, cfg, base_channels)
    _, cut_acc = loss_and_accuracy(model, load_split(args.data, "val"), normalizer(load_meta(args.data)))
    job = TrainJob(
        model, parent["model"], rebuild_kwargs(model, parent["model_kwargs"]),
        dataclasses.replace(ft.train, epochs=rnd.epochs), seed, as_params(seed=seed, prune=cfg, slim=params.slim),
        loss_fn=make_kd_loss(model_from_checkpoint(args.teacher), ft.temperature, ft.alpha) if ft.distill else None,
        after_backward=bn_l1_hook(params.slim.l1, cfg.blocks))
    run_training(
        job, f"prune@{args.round}", args.data, Outputs(args.out, args.metrics, args.live),
        extra_metrics={"width": rnd.width, "channels": {n: len(k) for n, k in keep.items()},
                       "val_acc_after_cut": round(cut_acc, 6)},
        extra_ckpt={"base_channels": dict(base_channels), "kept_channels": keep_as_lists(keep)})
