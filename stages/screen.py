"""screen: the knee search's optional screen (prune.search.epochs >= 1; 0, the default: an empty curve, no training): cut prune.search.parent to each width of prune.search.ladder, fine-tune every cut and the uncut parent alike for prune.search.epochs, and write the validation curve whose crossing the first auto round probes."""
from shrink.stage import stage

with stage("screen", __doc__, reads=("seed", "slim", "prune.criterion", "prune.bnless_criterion", "prune.mode",
                                     "prune.min_channels", "prune.blocks", "prune.round_to", "prune.finetune",
                                     "prune.search"),
           inputs={"parent": "checkpoint the screen cuts (prune.search.parent)",
                   "teacher": "teacher checkpoint (fine-tuning with KD)", "data": "prepared data folder"},
           outputs={"out": "the curve (JSON): each width's validation accuracy, parameters and int8w bytes"}) as (
        params, args):
    import os
    import sys

    from shrink.io import write_json
    from shrink.screen import screen

    os.environ["SHRINK_RESUME"] = "0"  # short fine-tunes in a temporary folder: nothing worth resuming
    s = params.prune.search

    def say(row, seconds):
        print(f"screen: width {row['width']:g}: val {row['val_acc']:.4f}, {row['params']:,} params, "
              f"int8w {row['int8w_bytes']:,} B ({seconds:.0f} s)", file=sys.stderr, flush=True)

    if s.ladder and s.epochs:
        print(f"screen: {len(s.ladder)} widths and the uncut {s.parent}, {s.epochs} epoch(s) each", file=sys.stderr)
    else:
        print("screen: none (prune.search.epochs is 0): the first auto round probes the ladder's middle",
              file=sys.stderr)
    curve = screen(args.parent, params.prune, slim_params=params.slim, seed=params.seed, data_dir=args.data,
                   teacher=args.teacher, progress=say) if s.ladder and s.epochs else {
        "parent": s.parent, "epochs": s.epochs, "reference": None, "curve": []}
    write_json(curve, args.out)
