"""distill: knowledge distillation from the frozen teacher into StudentNet (optionally with slimming's L1)."""
from shrink.stage import stage

with stage("distill", __doc__, reads=("seed", "student_net", "distill", "slim"),
           inputs={"data": "prepared data folder", "teacher": "teacher checkpoint"},
           outputs={"out": "checkpoint (.pt); a torchinfo summary goes beside it", "metrics": "metrics JSON",
                    "live": "dvclive folder for per-epoch curves"}) as (params, args):
    from shrink.checkpoint import check_classes, load_checkpoint, model_from_checkpoint
    from shrink.data import load_meta
    from shrink.distill import make_kd_loss
    from shrink.distributed import launch
    from shrink.models import build_model, student_kwargs
    from shrink.pipeline import Outputs, TrainJob, as_params, run_training
    from shrink.prune import bn_l1_hook
    from shrink.train import seed_everything

    arch, p, slim, seed = params.student_net, params.distill, params.slim, params.seed
    launch(p.train, "distill.train")  # nproc > 1: this command again, under torchrun
    seed_everything(seed)
    meta = load_meta(args.data)
    ckpt = load_checkpoint(args.teacher)
    check_classes(ckpt, meta["classes"], args.teacher)
    teacher = model_from_checkpoint(ckpt)  # KDLoss.prepare moves it to the training device
    kwargs = student_kwargs(arch.arch, arch.base, arch.width_mult, arch.small_input)
    model = build_model(arch.arch, len(meta["classes"]), **kwargs)
    run_training(TrainJob(model, arch.arch, kwargs, p.train, seed,
                          as_params(seed=seed, student_net=arch, distill=p, slim=slim),
                          loss_fn=make_kd_loss(teacher, p.temperature, p.alpha), after_backward=bn_l1_hook(slim.l1)),
                 "distill", args.data, Outputs(args.out, args.metrics, args.live),
                 extra_metrics={"temperature": p.temperature, "alpha": p.alpha})
