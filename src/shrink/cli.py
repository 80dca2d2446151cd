"""The ``shrink`` command: ``shrink predict PATH...``, ``shrink bench``, ``shrink weights ARCH``,
``shrink export-course MODEL OUT`` and ``shrink seeds``.

The pipeline itself runs through ``dvc repro``; this command is for using its results.
"""
from __future__ import annotations

import sys


COMMANDS = {
    "predict": ("shrink.predict", "classify image files or folders with a shipped artifact"),
    "bench": ("shrink.bench", "measure size, accuracy, latency and pipeline cost as ratios"),
    "weights": ("shrink.weights", "print the path of a packaged pretrained weights file (for dvc import-url)"),
    "export-course": ("shrink.course", "write a model in the course notebook's 8-bit pickle layout"),
    "seeds": ("shrink.seeds", "pool DVC experiments that differ in seed alone: mean ± sd (n) per model, a chart"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<14} {help}" for name, (_, help) in COMMANDS.items()]
        print("usage: shrink {" + ",".join(COMMANDS) + "} ...\n\ncommands:\n" + "\n".join(lines) +
              "\n\nRun 'shrink COMMAND --help' for a command's options. The pipeline runs with 'dvc repro'.")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
