"""teacher: train a torchvision classifier (or EfficientNet-Lite0) from scratch, or fine-tune it from a tracked
weights file under weights/ (teacher.weights)."""
from shrink.stage import stage

with stage("teacher", __doc__, reads=("seed", "teacher"),
           inputs={"data": "prepared data folder",
                   "weights_dir": "the folder dvc.yaml declares as the teacher's weights dependency"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"}) as (params, args):
    from shrink.data import load_meta
    from shrink.distributed import launch
    from shrink.models import build_model, teacher_kwargs
    from shrink.pipeline import Outputs, TrainJob, as_params, run_training
    from shrink.pretrained import load_backbone, resolve
    from shrink.train import seed_everything

    p, seed = params.teacher, params.seed
    weights = resolve(p.weights, args.weights_dir) if p.weights else None  # a missing file fails before torchrun
    launch(p.train, "teacher.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    meta = load_meta(args.data)
    kwargs = teacher_kwargs(p.arch, p.small_input, p.input_size, p.input_norm, weights is not None,
                            meta["image_size"], meta["mean"], meta["std"])
    model = build_model(p.arch, len(meta["classes"]), **kwargs)
    source = load_backbone(model, weights, p.arch) if weights else None  # checked: hash, weights_only, keys
    run_training(TrainJob(model, p.arch, kwargs, p.train, seed, as_params(seed=seed, teacher=p),
                          backbone_lr_mult=p.backbone_lr_mult),
                 "teacher", args.data, Outputs(args.out, args.metrics, args.live),
                 extra_metrics={"weights": source, "input_size": p.input_size or meta["image_size"],
                                "input_norm": kwargs.get("input_norm", {}).get("name", "data")},
                 extra_ckpt={"weights": source})
