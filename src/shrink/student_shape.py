"""StudentNet's shape as plain numbers: one place for them, torch-free, so that ``config`` can check
``prune.blocks`` without importing torch and ``models`` builds the net from the same constants."""
from __future__ import annotations

from typing import Sequence

# The course's channel multipliers: base*m for each of the 8 conv blocks.
MULTIPLIER = (1, 2, 4, 8, 16, 16, 16, 16)
# Blocks whose width the course's ``width_mult`` scales (and that pruning cuts by default: ``prune.blocks``).
PRUNABLE_BLOCKS = (3, 4, 5, 6)
# The width indices that can be cut at all: width 0 is made by the stem (conv + its own BN), width 7 feeds the
# classifier with no BN after it.
CUTTABLE = range(1, 7)


def blocks_ok(blocks: Sequence[int]) -> bool:
    """Whether ``blocks`` are distinct StudentNet width indices in ``CUTTABLE``."""
    return all(j in CUTTABLE for j in blocks) and len(set(blocks)) == len(blocks)


def student_widths(base: int = 16, width_mult: float = 1.0) -> list[int]:
    """The course's ``bandwidth`` list: 8 block widths, blocks 3..6 scaled by ``width_mult``."""
    widths = [base * m for m in MULTIPLIER]
    for i in PRUNABLE_BLOCKS:
        widths[i] = int(widths[i] * width_mult)
    return widths
