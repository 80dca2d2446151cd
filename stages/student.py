"""student: the same StudentNet trained without a teacher, the baseline that shows what distillation buys."""
from shrink.config import stage_errors

with stage_errors("student"):
    from shrink.config import StudentArchParams, StudentParams, load_params, section, seed_of
    from shrink.data import load_meta
    from shrink.distributed import relaunch
    from shrink.models import build_model, student_kwargs
    from shrink.pipeline import as_params, run_training, stage_args
    from shrink.train import seed_everything

    args = stage_args(__doc__)
    params = load_params(args.params)  # the whole file is checked before any work
    arch, p, seed = section(params, "student_net", StudentArchParams), section(params, "student", StudentParams), seed_of(params)
    relaunch(p.train.nproc)  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    kwargs = student_kwargs(arch.arch, arch.base, arch.width_mult, arch.small_input)
    model = build_model(arch.arch, len(load_meta(args.data)["classes"]), **kwargs)
    run_training(model, name=arch.arch, model_kwargs=kwargs, cfg=p.train, seed=seed,
                 resolved=as_params(seed=seed, student_net=arch, student=p), data_dir=args.data, out=args.out,
                 metrics_path=args.metrics, live_dir=args.live, desc="student")
