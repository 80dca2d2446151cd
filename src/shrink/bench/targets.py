"""The targets the pipeline is held to, and how a measured value meets or misses one."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..evaluate import REFERENCE

# key -> (label, op, goal). The speed ratios are evaluate's (metrics/latency.json): median latencies measured
# side by side in one run, against the unpruned student in ORT fp32 (REFERENCE).
TARGETS = {
    "size": ("shipped artifact is smaller than the teacher (fp32)", ">=", 150.0),
    "shipped_bytes": ("shipped artifact bytes", "<=", 300_000),
    "shipped_vs_uint8": ("shipped artifact bytes / the course uint8 file of the same network", "<=", 1.1),
    "shipped_b1": (f"shipped artifact speed vs the unpruned student in ORT fp32 ({REFERENCE}), batch 1, "
                   f"by median latency", ">=", 1.0),
    "shipped_b64": (f"shipped artifact speed vs the unpruned student in ORT fp32 ({REFERENCE}), batch 64, "
                    f"by median latency", ">=", 1.0),
    "pruned_b64": (f"final pruning round in ORT fp32 vs {REFERENCE}, batch 64, by median latency", ">=", 1.1),
    "accuracy": ("shipped artifact's test accuracy loss vs its fp32 parent (points)", "<=", 0.5),
    "data_path": ("training loop over prepared tensors vs the course's PIL loader (images/s)", ">=", 3.0),
    "late_rerun": ("rerun after changing the last pruning round, fraction of a full run", "<=", 0.25),
}


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or ``den`` is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


@dataclass(frozen=True)
class TargetCheck:
    """One target against its measured value."""

    key: str
    label: str
    op: str  # ">=" or "<="
    goal: float
    value: float | None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.op == ">=" else self.value <= self.goal

    @property
    def shortfall(self) -> float | None:
        """How far off a missed target is, as a factor > 1 (None when met or not measured)."""
        if self.met is not False:
            return None
        if self.op == ">=":
            return math.inf if self.value <= 0 else self.goal / self.value
        return math.inf if self.goal <= 0 else self.value / self.goal

    def as_dict(self) -> dict[str, Any]:
        short = self.shortfall
        return {"key": self.key, "label": self.label, "op": self.op, "goal": self.goal, "value": self.value,
                "met": self.met, "shortfall": None if short is None or math.isinf(short) else short}


def check_target(key: str, value: float | None) -> TargetCheck:
    """``value`` against the target ``key`` of ``TARGETS``.

    Args:
        key: a key of ``TARGETS``.
        value: the measured figure (None: not measured).
    """
    label, op, goal = TARGETS[key]
    return TargetCheck(key, label, op, goal, value)
