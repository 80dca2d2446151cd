"""prepare: decode the dataset once into uint8 tensors (train / val / test [/ evaluation])."""
import argparse

from shrink.config import stage_errors

with stage_errors("prepare"):
    from shrink.config import DataParams, load_params, section, seed_of
    from shrink.data import prepare
    from shrink.io import write_json

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/prepared", help="prepared data folder (replaced atomically)")
    ap.add_argument("--metrics", default="metrics/prepare.json")
    args = ap.parse_args()

    params = load_params(args.params)  # the whole file is checked before any work
    metrics = prepare(section(params, "data", DataParams), args.out, seed_of(params))
    write_json(metrics, args.metrics)
    print(f"prepare: {metrics['images']} images, {metrics['classes']} classes -> {args.out}")
