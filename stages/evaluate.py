"""evaluate: accuracy, bytes and CPU latency of every model and runtime; picks what ships; metrics, plots, report.md, predictions."""
from shrink.stage import stage

with stage("evaluate", __doc__, reads=("prune.rounds", "quantize.models", "evaluate"),
           inputs={"data": "prepared data folder", "models": "folder of checkpoints (<name>.pt) and quantized/ artifacts",
                   "prune_metrics": "folder of the prune rounds' metrics", "live": "dvclive folder (training curves)"},
           outputs={"metrics": "evaluate.json", "latency": "latency.json", "plots": "folder for the plot CSVs",
                    "report": "report.md", "predictions": "predictions.csv",
                    "charts": "folder for the report's PNG charts"}) as (params, args):
    from shrink.evaluate import run

    print(run(params, **{k: v for k, v in vars(args).items() if k != "params"}))
