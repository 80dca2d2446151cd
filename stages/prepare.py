"""prepare: decode the dataset once into uint8 tensors (train / val / test [/ evaluation])."""
from shrink.stage import stage

with stage("prepare", __doc__, reads=("seed", "data"),
           outputs={"out": "prepared data folder (replaced atomically)", "metrics": "metrics JSON"}) as (params, args):
    from shrink.data import prepare
    from shrink.io import write_json

    metrics = prepare(params.data, args.out, params.seed)
    write_json(metrics, args.metrics)
    print(f"prepare: {metrics['images']} images, {metrics['classes']} classes -> {args.out}")
