"""teacher: train a torchvision ResNet18 (from scratch, or from local ImageNet weights)."""
from shrink.config import stage_errors

with stage_errors("teacher"):
    from shrink.config import TeacherParams, load_params, section, seed_of
    from shrink.data import load_meta
    from shrink.models import build_model
    from shrink.distributed import relaunch
    from shrink.pipeline import as_params, run_training, stage_args
    from shrink.train import seed_everything

    args = stage_args(__doc__)
    params = load_params(args.params)  # the whole file is checked before any work
    p, seed = section(params, "teacher", TeacherParams), seed_of(params)
    relaunch(p.train.nproc)  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    kwargs = {"pretrained": p.pretrained, "small_input": p.small_input}
    model = build_model(p.arch, len(load_meta(args.data)["classes"]), **kwargs)
    run_training(model, name=p.arch, model_kwargs=kwargs, cfg=p.train, seed=seed,
                 resolved=as_params(seed=seed, teacher=p), data_dir=args.data, out=args.out,
                 metrics_path=args.metrics, live_dir=args.live, desc="teacher")
