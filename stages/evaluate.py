"""evaluate: accuracy, bytes and CPU latency of every model and runtime; picks what ships; metrics, plots, report.md, predictions."""
from shrink.config import exit_on_user_errors

exit_on_user_errors("evaluate")  # user faults: one `evaluate: error: ...` line, no traceback
import argparse
import tempfile
from pathlib import Path

from shrink.charts import csv_rows, read_live_curves, write_charts
from shrink.config import from_dict, load_params
from shrink.data import load_meta, load_split, normalizer
from shrink.evaluate import (EvaluateParams, choose_shipped, collect, compare, models_plot, predict_classes,
                             predictions_csv, prune_plot, report_markdown, shipped_sections)
from shrink.io import read_json, write_json, write_text

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
p = from_dict(EvaluateParams, params.get("evaluate"), "evaluate")  # validated before any work
rounds = list((params.get("prune") or {}).get("rounds") or {})
quantized = list((params.get("quantize") or {}).get("models") or [])
meta = load_meta(args.data)

# everything is computed before anything is written: a failure leaves the previous outputs alone
with tempfile.TemporaryDirectory(prefix="shrink-evaluate-") as tmp:  # the ORT fp32 exports: timed, not kept
    entries = collect(Path(args.models), ["teacher", "student", "distill", *rounds], quantized, p.threads, Path(tmp))
    ev, lat, _ = compare(entries, load_split(args.data, "test"), meta, p)
    shipped = None
    if quantized:
        name, rule, verdicts = choose_shipped(ev, lat, quantized[-1], p)
        ev["shipped"], lat["shipped"] = shipped_sections(name, rule, verdicts, entries, ev, lat, p)
        shipped = next(e for e in entries if e.name == name)
    rows = {k: v for k, v in ev.items() if k != "shipped"}
    rounds_metrics = {name: read_json(Path(args.prune_metrics) / f"{name}.json") for name in rounds}
    report = "# shrink report\n\n" + report_markdown(rows, lat, p, ev.get("shipped"))
    predictions = "Id,Category\n"  # no unlabeled split in this dataset: header only
    if "evaluation" in meta["splits"] and shipped:
        evaluation = load_split(args.data, "evaluation")
        predictions = predictions_csv(evaluation.ids, predict_classes(shipped.run, evaluation.images, normalizer(meta)))
        report += f"\n`{args.predictions}`: {len(evaluation.ids)} predictions of the unlabeled evaluation split by `{shipped.name}`.\n"
    prune_csv = prune_plot(rows, rounds_metrics)
    curves = read_live_curves(args.live)

write_json(ev, args.metrics)
write_json(lat, args.latency)
write_text(models_plot(rows), Path(args.plots) / "models.csv")
write_text(prune_csv, Path(args.plots) / "prune.csv")
write_text(predictions, args.predictions)
report += "\n" + write_charts(ev, lat, csv_rows(prune_csv), curves, args.charts, Path(args.report).parent,
                            shipped=shipped.name if shipped else None, batch_sizes=p.batch_sizes)
write_text(report, args.report)
print(report)
