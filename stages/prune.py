"""prune: one Network Slimming round: cut channels by BatchNorm |gamma|, rebuild a smaller dense net of the same arch, fine-tune."""
from shrink.config import exit_on_user_errors

exit_on_user_errors("prune")  # user faults: one `prune: error: ...` line, no traceback
import dataclasses

from shrink.checkpoint import load_checkpoint, model_from_checkpoint
from shrink.config import FinetuneParams, SlimParams, from_dict, load_params, section, seed_of
from shrink.data import load_meta, load_split, normalizer
from shrink.distill import make_kd_loss
from shrink.distributed import relaunch
from shrink.pipeline import as_params, run_training, stage_args
from shrink.prune import PruneParams, RoundParams, base_channels_of, bn_l1_hook, keep_as_lists, rebuild_kwargs, slim
from shrink.train import evaluate, seed_everything


def extra(ap):
    ap.add_argument("--round", required=True, help="round name: a key of prune.rounds in params.yaml")
    ap.add_argument("--parent", required=True, help="checkpoint this round cuts")
    ap.add_argument("--teacher", required=True, help="teacher checkpoint (fine-tuning with distillation)")


args = stage_args(__doc__, extra)
params = load_params(args.params)
pp = params.get("prune") or {}
cfg = from_dict(PruneParams, {k: pp[k] for k in ("mode", "min_channels", "blocks", "round_to") if k in pp}, "prune")
ft = from_dict(FinetuneParams, pp.get("finetune"), "prune.finetune")
if args.round not in (pp.get("rounds") or {}):
    raise SystemExit(f"prune: error: params.yaml: prune.rounds.{args.round}: no such round")
rnd = from_dict(RoundParams, pp["rounds"][args.round], f"prune.rounds.{args.round}")
slim_p, seed = section(params, "slim", SlimParams), seed_of(params)
relaunch(ft.train.nproc)  # nproc > 1: this command again, under torchrun
seed_everything(seed)

parent = load_checkpoint(args.parent)
model = model_from_checkpoint(parent)
base_channels = parent.get("base_channels") or base_channels_of(model, cfg.blocks)  # the unpruned net's
model, keep = slim(model, rnd.width, cfg, base_channels)
channels = {n: len(k) for n, k in keep.items()}
meta = load_meta(args.data)
_, cut_acc = evaluate(model, load_split(args.data, "val"), normalizer(meta))

loss_fn = None
if ft.distill:
    loss_fn = make_kd_loss(model_from_checkpoint(args.teacher), ft.temperature, ft.alpha)
run_training(
    model, name=parent["model"], model_kwargs=rebuild_kwargs(model, parent["model_kwargs"]),
    cfg=dataclasses.replace(ft.train, epochs=rnd.epochs),
    seed=seed, resolved=as_params(seed=seed, prune=cfg, finetune=ft, round=rnd, slim=slim_p),
    data_dir=args.data, out=args.out, metrics_path=args.metrics, live_dir=args.live,
    loss_fn=loss_fn, after_backward=bn_l1_hook(slim_p.l1, cfg.blocks),
    extra_metrics={"width": rnd.width, "channels": channels, "val_acc_after_cut": round(cut_acc, 6)},
    extra_ckpt={"base_channels": dict(base_channels), "kept_channels": keep_as_lists(keep)}, desc=f"prune {args.round}",
)
