"""Benchmark: what the pipeline buys, as ratios of things measured in the same run.

``python -m shrink.bench`` (or ``shrink bench``, ``make bench``) prints its figures and writes
``bench/results.json`` and ``bench/results.md``. The machine is shared and noisy, so every speed figure is
a ratio of two measurements taken side by side in one run, never an absolute time compared with another
run's. No stage imports this package (dvc.yaml lists none of it): editing it reruns nothing.

Sections, one module each where they have code of their own:

1. compression (``sections``): bytes of the teacher (fp32) against the shipped artifact that the evaluate
   stage chose, the shipped bytes against the course's uint8 file of the same network, and each model's
   test accuracy minus the teacher's, all from ``metrics/evaluate.json``.
2. latency (``sections``): what the evaluate stage measured, read from ``metrics/latency.json`` (median and
   min of interleaved samples by ``shrink.runtime.interleaved``; speed-ups are its median ratios against the
   teacher and ``distill.ort``). The benchmark times no model a second time.
3. data path (``datapath``): images/s of the pipeline's training loop over prepared tensors against the
   course's PIL-per-item loader over the same images, same model and batch size.
4. pipeline cost (``sections``): wall time of a full ``dvc repro`` from an empty cache in a fresh copy of the
   project (made by ``project``), of a no-op ``dvc repro`` and of the rerun after changing one late pruning round.
5. the machine (``sections``): CPU, cores, library versions, date, how busy it was.

``targets`` holds the goals, ``report`` the markdown page, ``cli`` the command line. ``project`` (copies of
the project, ``tiny_overrides``, git / dvc commands) is shared with the tests' tiny projects.
``--quick`` runs all of it on a copy of the project with tiny params (seconds to a few minutes).
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """``shrink bench`` (see ``shrink.bench.cli``); imported on call, so ``shrink.bench.project`` stays light."""
    from .cli import main as cli_main

    return cli_main(argv)
