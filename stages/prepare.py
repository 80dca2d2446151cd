"""prepare: decode the dataset once into uint8 tensors (train / val / test [/ evaluation])."""
from shrink.stage import stage

with stage("prepare", __doc__, reads=("seed", "data"),
           outputs={"out": "prepared data folder (replaced atomically)",
                    "metrics": "metrics JSON (totals; per-class counts go to <out>/prepare.json)"}) as (params, args):
    from shrink.data import headline, prepare
    from shrink.io import write_json

    counts = prepare(params.data, args.out, params.seed)  # per class and split: <out>/prepare.json
    write_json(headline(counts), args.metrics)
    print(f"prepare: {counts['images']} images, {counts['classes']} classes -> {args.out}")
