"""quantize: one checkpoint's artifact in every quantization format of shrink.formats (by default fp16, the course's
uint8 min-max file, int8 ONNX (QDQ) and weight-only int8 ONNX)."""
from shrink.stage import stage

with stage("quantize", __doc__, reads=("seed", "quantize.calibration_images"),
           inputs={"data": "prepared data folder", "model": "fp32 checkpoint to quantize"},
           outputs={"out_prefix": "writes <prefix>.<suffix> for every format of shrink.formats",
                    "metrics": "metrics JSON"}) as (params, args):
    from shrink.checkpoint import load_checkpoint
    from shrink.data import calibration_sample
    from shrink.formats import save_all
    from shrink.io import write_json

    calib = calibration_sample(args.data, params.quantize.calibration_images, params.seed)
    sizes = save_all(load_checkpoint(args.model), calib, args.out_prefix)
    write_json({"source": args.model, **sizes}, args.metrics)
    print(f"quantize {args.model}: " + ", ".join(f"{k} {v:,} B" for k, v in sizes.items()))
