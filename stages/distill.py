"""distill: knowledge distillation from the frozen teacher into StudentNet (optionally with slimming's L1)."""
from shrink.stage import stage

with stage("distill", __doc__, reads=("seed", "student_net", "distill", "slim"),
           inputs={"data": "prepared data folder", "teacher": "teacher checkpoint"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"}) as (params, args):
    from shrink.data import load_meta
    from shrink.distill import distill_job, load_teacher
    from shrink.distributed import launch
    from shrink.models import build_model, student_kwargs
    from shrink.pipeline import Outputs, as_params, run_training
    from shrink.train import seed_everything

    arch, p, seed = params.student_net, params.distill, params.seed
    launch(p.train, "distill.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    meta = load_meta(args.data)
    teacher = load_teacher(args.teacher, meta["classes"])  # before the student: its init draws from the seeded RNG
    kwargs = student_kwargs(arch.arch, arch.base, arch.width_mult, arch.small_input)
    model = build_model(arch.arch, len(meta["classes"]), **kwargs)
    run_training(distill_job(model, arch.arch, kwargs, p.train, seed,
                             as_params(seed=seed, student_net=arch, distill=p, slim=params.slim),
                             teacher, params),
                 "distill", args.data, Outputs(args.out, args.metrics, args.live),
                 extra_metrics={"temperature": p.temperature, "alpha": p.alpha})
