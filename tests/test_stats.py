"""The paired interval behind every claim: its arithmetic, its coverage, and its behaviour on small splits."""
from __future__ import annotations

import math

import pytest
import torch

from shrink.stats import images_needed, lower_bound, mean_sd, paired, z_value


def pairs(n_ab: int, n_ba: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * n_ab + [False] * n_ba + [True] * both + [False] * neither
    b = [False] * n_ab + [True] * n_ba + [True] * both + [False] * neither
    return a, b


def test_difference_and_interval_by_hand():
    a, b = pairs(300, 200, 8500, 1000)  # 10,000 images, a +1.0 point
    p = paired(a, b)
    assert (p.n, p.n_ab, p.n_ba) == (10_000, 300, 200)
    assert p.diff == pytest.approx(1.0)
    # Bonett-Price: (301 - 201) / 10002 +- 1.96 * sqrt((301 + 201) / 10002 - d^2) / sqrt(10002)
    d = 100 / 10_002
    se = math.sqrt((502 / 10_002 - d * d) / 10_002)
    assert p.low == pytest.approx(100 * (d - 1.959964 * se), abs=1e-4)
    assert p.high == pytest.approx(100 * (d + 1.959964 * se), abs=1e-4)
    assert p.verdict == "gain" and p.text() == f"+1.00 pt [{p.low:+.2f}, {p.high:+.2f}]"
    assert paired(b, a).verdict == "loss"


def test_a_difference_inside_noise_is_not_a_gain():
    a, b = pairs(110, 100, 8800, 990)  # +0.1 point on 10,000 images: noise
    p = paired(a, b)
    assert p.low < 0 < p.high and p.verdict == "within noise"


def test_no_discordant_image_still_has_an_interval():
    # 30 identical answers: the plain Wald interval would be [0, 0]; one image is 3.3 points here
    a, b = pairs(0, 0, 25, 5)
    p = paired(a, b)
    assert p.diff == 0 and p.low < -3 and p.high > 3


def test_coverage_is_near_its_confidence():
    """Simulated paired outcomes with a known difference: the 95 % interval holds it ~95 % of the time."""
    g = torch.Generator().manual_seed(0)
    n, trials, p_ab, p_ba = 400, 1500, 0.06, 0.03
    u = torch.rand(trials, n, generator=g)
    hold = 0
    for row in u:
        a = (row < p_ab) | (row >= p_ab + p_ba) & (row < 0.9)  # a right: its own wins and the shared rights
        b = (row >= p_ab) & (row < 0.9)
        p = paired(a.tolist(), b.tolist())
        hold += p.low <= 100 * (p_ab - p_ba) <= p.high
    assert 0.93 <= hold / trials <= 0.97


def test_lower_bound_one_sided_and_point():
    a, b = pairs(300, 200, 8500, 1000)
    assert lower_bound(a, b, 0) == pytest.approx(1.0)
    lb = lower_bound(a, b, 0.95)
    assert paired(a, b, 0.90).low == pytest.approx(lb, abs=1e-9)  # one-sided 95 % = two-sided 90 %
    assert lb < 1.0


def test_images_needed():
    # 6 % discordant images, 0.5-point tolerance at 95 %: 1.645^2 * 0.06 / 0.005^2 = 6,494
    assert images_needed(0.06, 0.5, 0.95) == math.ceil(z_value(0.95, 1) ** 2 * 0.06 / 0.005**2)
    assert images_needed(0.0, 0.5, 0.95) == 200  # one image must weigh less than the tolerance
    assert images_needed(0.06, 0.5, 0) == 200
    with pytest.raises(ValueError):
        images_needed(0.06, 0, 0.95)


def test_mean_sd():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert mean_sd([5.0]) == (5.0, 0.0, 1)
    with pytest.raises(ValueError):
        paired([True], [True, False])
