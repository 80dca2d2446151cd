"""prune: one pruning round: rank channels by prune.criterion (Network Slimming's BatchNorm |gamma| by default), cut them, rebuild a smaller dense net of the same arch, fine-tune."""
from shrink.stage import stage

with stage("prune", __doc__, reads=("seed", "slim", "prune.criterion", "prune.mode", "prune.min_channels", "prune.blocks",
                                    "prune.round_to", "prune.finetune", "prune.rounds.{round}"),
           inputs={"parent": "checkpoint this round cuts", "teacher": "teacher checkpoint (fine-tuning with KD)",
                   "data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"},
           options={"round": "round name: a key of prune.rounds in params.yaml"}) as (params, args):
    import dataclasses

    from shrink.checkpoint import load_checkpoint, model_from_checkpoint
    from shrink.config import ParamsError
    from shrink.criteria import get_criterion
    from shrink.data import load_meta, load_split, normalizer, train_sample
    from shrink.distill import make_kd_loss
    from shrink.distributed import launch
    from shrink.pipeline import as_params, run_training
    from shrink.prune import base_channels_of, bn_l1_hook, keep_as_lists, rebuild_kwargs, slim
    from shrink.train import evaluate, seed_everything

    if args.round not in params.prune.rounds:
        raise ParamsError(f"params.yaml: prune.rounds.{args.round}: no such round")
    cfg, rnd, ft, seed = params.prune.only(args.round), params.prune.rounds[args.round], params.prune.finetune, params.seed
    launch(ft.train, "prune.finetune.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    parent = load_checkpoint(args.parent)
    model = model_from_checkpoint(parent)
    base_channels = parent.get("base_channels") or base_channels_of(model, cfg.blocks)  # the unpruned net's
    images = get_criterion(cfg.criterion).sample_images
    sample = train_sample(args.data, images, seed) if images else None
    model, keep = slim(model, rnd.width, cfg, base_channels, sample=sample, seed=seed)
    _, cut_acc = evaluate(model, load_split(args.data, "val"), normalizer(load_meta(args.data)))
    run_training(
        model, name=parent["model"], model_kwargs=rebuild_kwargs(model, parent["model_kwargs"]),
        cfg=dataclasses.replace(ft.train, epochs=rnd.epochs), seed=seed,
        resolved=as_params(seed=seed, prune=cfg, slim=params.slim), data_dir=args.data, out=args.out,
        metrics_path=args.metrics, live_dir=args.live,
        loss_fn=make_kd_loss(model_from_checkpoint(args.teacher), ft.temperature, ft.alpha) if ft.distill else None,
        after_backward=bn_l1_hook(params.slim.l1, cfg.blocks),
        extra_metrics={"width": rnd.width, "channels": {n: len(k) for n, k in keep.items()},
                       "val_acc_after_cut": round(cut_acc, 6)},
        extra_ckpt={"base_channels": dict(base_channels), "kept_channels": keep_as_lists(keep)},
        desc=f"prune {args.round}")
