"""Paired comparisons of two classifiers on the same images: the error bar of every claim the report makes.

Two models scored on the same ``n`` images give per-image correctness ``a_i`` and ``b_i``. The difference of
their accuracies is carried by the *discordant* images alone, ``n_ab`` (a right, b wrong) and ``n_ba`` (the
reverse), as in McNemar's test: ``diff = (n_ab - n_ba) / n``. Its confidence interval is the adjusted Wald
interval of Bonett and Price (2012, "Adjusted Wald confidence interval for a difference of binomial proportions
based on paired data"): one pseudo-image added to each discordant cell (and two to ``n``), then the usual normal
interval. Why that one: it is closed-form (so the figures in ``metrics/summary.json`` are deterministic, unlike a
bootstrap's), and unlike the plain Wald interval it keeps a sensible width when few or no images are discordant
(the plain one collapses to zero width there, i.e. false certainty on a small split).

A difference is called a gain or a loss only when its interval excludes zero (``verdict``); the ship rule's
non-inferiority test is the one-sided lower bound (``lower_bound``) against ``-max_drop``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence


@dataclass(frozen=True)
class Paired:
    """``a - b`` on the same images, in accuracy points (0..100 scale).

    Attributes:
        n: images compared; n_ab: a right and b wrong; n_ba: b right and a wrong.
        diff: the observed difference, points. low, high: the two-sided interval at ``confidence``.
    """

    n: int
    n_ab: int
    n_ba: int
    diff: float
    low: float
    high: float
    confidence: float

    def text(self, digits: int = 2) -> str:
        """``+0.14 pt [-0.21, +0.49]``."""
        return f"{self.diff:+.{digits}f} pt [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    @property
    def verdict(self) -> str:
        """``gain`` / ``loss`` when the interval excludes zero, else ``within noise``."""
        return "gain" if self.low > 0 else "loss" if self.high < 0 else "within noise"

    def as_dict(self) -> dict:
        """Plain, rounded figures for JSON files (deterministic)."""
        return {"diff_pt": round(self.diff, 4), "low_pt": round(self.low, 4), "high_pt": round(self.high, 4),
                "confidence": self.confidence, "n": self.n, "n_ab": self.n_ab, "n_ba": self.n_ba,
                "verdict": self.verdict}


def _counts(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, int]:
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same images: {len(a)} vs {len(b)} predictions")
    n_ab = sum(1 for x, y in zip(a, b) if x and not y)
    n_ba = sum(1 for x, y in zip(a, b) if y and not x)
    return len(a), n_ab, n_ba


def _adjusted(n: int, n_ab: int, n_ba: int) -> tuple[float, float]:
    """Bonett-Price adjusted difference and its standard error, as fractions."""
    p_ab, p_ba = (n_ab + 1) / (n + 2), (n_ba + 1) / (n + 2)
    d = p_ab - p_ba
    return d, math.sqrt(max(p_ab + p_ba - d * d, 0.0) / (n + 2))


def z_value(confidence: float, sides: int) -> float:
    """The normal quantile of a ``sides``-sided interval at ``confidence`` (e.g. 1.96 for 0.95, two-sided)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / sides)


def paired(a: Sequence[bool], b: Sequence[bool], confidence: float = 0.95) -> Paired:
    """The difference ``accuracy(a) - accuracy(b)`` on the same images, with its two-sided interval.

    Args:
        a, b: per-image correctness of the two models, in the same image order.
        confidence: of the two-sided interval (0.95: 95 %).
    """
    n, n_ab, n_ba = _counts(a, b)
    if n == 0:
        raise ValueError("paired comparison of zero images")
    d, se = _adjusted(n, n_ab, n_ba)
    z = z_value(confidence, 2)
    return Paired(n, n_ab, n_ba, 100 * (n_ab - n_ba) / n, 100 * max(d - z * se, -1.0), 100 * min(d + z * se, 1.0),
                  confidence)


def lower_bound(a: Sequence[bool], b: Sequence[bool], confidence: float) -> float:
    """One-sided lower confidence bound of ``accuracy(a) - accuracy(b)``, points; confidence 0: the point estimate.

    The ship rule's non-inferiority test: ``a`` is not worse than ``b`` by more than ``m`` points at
    ``confidence`` when ``lower_bound(a, b, confidence) >= -m``.
    """
    return lower_bound_counts(*_counts(a, b), confidence)


def lower_bound_counts(n: int, n_ab: int, n_ba: int, confidence: float) -> float:
    """``lower_bound`` from its sufficient statistics: ``n`` images, ``n_ab`` right by ``a`` alone, ``n_ba`` by
    ``b`` alone (what the knee search's curve keeps instead of every image's correctness)."""
    if n == 0:
        raise ValueError("paired comparison of zero images")
    if confidence == 0:
        return 100 * (n_ab - n_ba) / n
    d, se = _adjusted(n, n_ab, n_ba)
    return 100 * (d - z_value(confidence, 1) * se)


def images_needed(discordance: float, tolerance_pt: float, confidence: float) -> int:
    """Images a decision split needs so that a one-sided bound at ``confidence`` sits within ``tolerance_pt``
    points of the observed difference, when a fraction ``discordance`` of images are discordant.

    From ``z * sqrt(q / n) <= t``: ``n >= z^2 q / t^2``; never fewer than ``100 / t`` (one image must weigh
    less than the tolerance). Confidence 0 (point estimates) needs only the latter.
    """
    t = tolerance_pt / 100
    if t <= 0:
        raise ValueError(f"tolerance must be > 0 points, got {tolerance_pt}")
    floor = math.ceil(1 / t)
    if confidence == 0:
        return floor
    return max(floor, math.ceil(z_value(confidence, 1) ** 2 * max(discordance, 0.0) / t**2))


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n); sd is 0 for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean of no values")
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd, n
