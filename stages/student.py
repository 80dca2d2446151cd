"""student: the same StudentNet trained without a teacher, the baseline that shows what distillation buys."""
from shrink.stage import stage

with stage("student", __doc__, reads=("seed", "student_net", "student"), inputs={"data": "prepared data folder"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"}) as (params, args):
    from shrink.data import load_meta
    from shrink.distributed import launch
    from shrink.models import build_model, student_kwargs
    from shrink.pipeline import Outputs, TrainJob, as_params, run_training
    from shrink.train import seed_everything

    arch, p, seed = params.student_net, params.student, params.seed
    launch(p.train, "student.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    kwargs = student_kwargs(arch.arch, arch.base, arch.width_mult, arch.small_input)
    model = build_model(arch.arch, len(load_meta(args.data)["classes"]), **kwargs)
    run_training(TrainJob(model, arch.arch, kwargs, p.train, seed, as_params(seed=seed, student_net=arch, student=p)),
                 "student", args.data, Outputs(args.out, args.metrics, args.live))
