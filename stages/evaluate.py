"""evaluate: accuracy, bytes and CPU latency of every model and runtime; picks what ships and writes it to a stable
place; metrics, plots, report.md, predictions."""
from shrink.stage import stage

with stage("evaluate", __doc__, reads=("prune.rounds", "prune.control", "prune.scratch", "quantize.models",
                                       "evaluate"),
           inputs={"data": "prepared data folder",
                   "models": "folder of checkpoints (<name>.pt, <name>.run.json) and quantized/ artifacts",
                   "live": "dvclive folder (training curves)",
                   "plan": "the knee search's plan folder (widths of rounds of width auto)",
                   "curve": "the knee search's screen curve (report section and chart)"},
           outputs={"metrics": "summary.json: the headline metrics", "table": "evaluate.json: every row (plain output)",
                    "latency": "latency.json: timings (plain output)", "plots": "folder for the plot CSVs",
                    "report": "report.md", "predictions": "predictions.csv",
                    "charts": "folder for the report's PNG charts",
                    "shipped": "folder for the shipped model (model.onnx, model.json)"}) as (params, args):
    from shrink.evaluate import run

    print(run(params, **{k: v for k, v in vars(args).items() if k != "params"}))
