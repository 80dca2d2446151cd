"""evaluate: accuracy, parameters, bytes on disk and CPU latency of every model; metrics, plots, report.md, predictions."""
import argparse
from pathlib import Path

from shrink.charts import csv_rows, read_live_curves, write_charts
from shrink.config import from_dict, load_params
from shrink.data import load_meta, load_split, normalizer
from shrink.evaluate import (Entry, EvaluateParams, compare, file_bytes, fp32_entry, models_plot, predict_classes,
                             predictions_csv, prune_plot, report_markdown, torch_runner)
from shrink.io import read_json, write_json, write_text
from shrink.quantize import load_artifact

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--params", default="params.yaml")
ap.add_argument("--data", default="data/prepared")
ap.add_argument("--models", default="models", help="folder of checkpoints (<name>.pt) and quantized/ artifacts")
ap.add_argument("--metrics", default="metrics/evaluate.json")
ap.add_argument("--prune-metrics", default="metrics/prune", help="folder of the prune rounds' metrics")
ap.add_argument("--latency", default="metrics/latency.json")
ap.add_argument("--plots", default="plots", help="folder for the plot CSVs")
ap.add_argument("--report", default="report.md")
ap.add_argument("--predictions", default="predictions.csv")
ap.add_argument("--live", default="dvclive", help="dvclive folder of teacher/student/distill (training curves)")
ap.add_argument("--charts", default="charts", help="folder for the report's PNG charts")
args = ap.parse_args()

params = load_params(args.params)
p = from_dict(EvaluateParams, params.get("evaluate"), "evaluate")
rounds = list((params.get("prune") or {}).get("rounds") or {})
quantized = list((params.get("quantize") or {}).get("models") or [])
models = Path(args.models)

entries = [fp32_entry(name, models / f"{name}.pt") for name in ("teacher", "student", "distill", *rounds)]
for src in quantized:
    for kind, ext in (("fp16", "fp16.pt"), ("uint8", "uint8.pt"), ("int8", "int8.onnx")):
        path = models / "quantized" / f"{src}.{ext}"
        model, _ = load_artifact(path, threads=p.threads)
        entries.append(Entry(f"{src}.{kind}", kind, path, torch_runner(model), params=next(e.params for e in entries if e.name == src),
                             bytes=file_bytes(path), source=src))

meta = load_meta(args.data)
ev, lat, _ = compare(entries, load_split(args.data, "test"), meta, p)
write_json(ev, args.metrics)
write_json(lat, args.latency)

write_text(models_plot(ev), Path(args.plots) / "models.csv")
rounds_metrics = {name: read_json(Path(args.prune_metrics) / f"{name}.json") for name in rounds}
write_text(prune_plot(ev, rounds_metrics), Path(args.plots) / "prune.csv")

report = "# shrink report\n\n" + report_markdown(ev, lat, p)
shipped = f"{quantized[-1]}.{p.ship}" if quantized else None
ids = None
if "evaluation" in meta["splits"] and shipped:
    evaluation = load_split(args.data, "evaluation")
    runner = next(e.runner for e in entries if e.name == shipped)
    pred = predict_classes(runner, evaluation.images, normalizer(meta))
    ids = evaluation.ids
    write_text(predictions_csv(ids, pred), args.predictions)
    report += f"\n`{args.predictions}`: {len(ids)} predictions of the unlabeled evaluation split by `{shipped}`.\n"
else:
    write_text("Id,Category\n", args.predictions)  # no unlabeled split in this dataset: header only
report += "\n" + write_charts(ev, lat, csv_rows((Path(args.plots) / "prune.csv").read_text()), read_live_curves(args.live),
                            args.charts, Path(args.report).parent, shipped=shipped, batch_sizes=p.batch_sizes)
write_text(report, args.report)
print(report)
