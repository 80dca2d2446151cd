"""quantize: fp16, the course's uint8 min-max file, int8 ONNX (QDQ) and weight-only int8 ONNX of one checkpoint."""
from shrink.config import exit_on_user_errors

exit_on_user_errors("quantize")  # user faults: one `quantize: error: ...` line, no traceback
import argparse
import os

import torch

from shrink.checkpoint import load_checkpoint
from shrink.config import QuantizeParams, load_params, section
from shrink.data import load_meta, load_split, normalizer
from shrink.io import write_json
from shrink.quantize import ARTIFACT_FILES, save_fp16, save_int8, save_int8w, save_uint8

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--params", default="params.yaml")
ap.add_argument("--data", default="data/prepared")
ap.add_argument("--model", required=True, help="fp32 checkpoint to quantize")
ap.add_argument("--out-prefix", required=True,
                help="writes <prefix>.fp16.pt, <prefix>.uint8.pt, <prefix>.int8.onnx, <prefix>.int8w.onnx")
ap.add_argument("--metrics", required=True)
args = ap.parse_args()

p = section(load_params(args.params), "quantize", QuantizeParams)
ckpt = load_checkpoint(args.model)
paths = {kind: f"{args.out_prefix}.{ext}" for kind, ext in ARTIFACT_FILES.items()}
save_fp16(ckpt, paths["fp16"])
save_uint8(ckpt, paths["uint8"])
save_int8w(ckpt, paths["int8w"])
train = load_split(args.data, "train")
# a seeded random sample: a folder source's train split is ordered by class
pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))[: p.calibration_images]
calib = normalizer(load_meta(args.data))(train.images[pick.sort().values])
save_int8(ckpt, calib, paths["int8"])
sizes = {f"{kind}_bytes": os.path.getsize(path) for kind, path in paths.items()}
write_json({"source": args.model, **sizes}, args.metrics)
print(f"quantize {args.model}: " + ", ".join(f"{k} {v:,} B" for k, v in sizes.items()))
