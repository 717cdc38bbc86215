"""metrics.success_rate: a success rate with its confidence interval (scipy's Wilson / Clopper-Pearson)."""

import math

import pytest
import torch

from gleak_edu import metrics


def test_wilson_interval_matches_the_closed_form():
    k, n, z = 4, 50, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = metrics.success_rate(successes=k, n=n)
    assert (r.successes, r.n, r.rate) == (4, 50, 0.08)
    assert r.low == pytest.approx(centre - half, abs=1e-9) and r.high == pytest.approx(centre + half, abs=1e-9)
    assert str(r) == "4/50 = 8 % (95 % CI 3-19 %)"


def test_clopper_pearson_at_zero_successes():
    r = metrics.success_rate(successes=0, n=10, method="exact")
    assert r.low == 0.0 and r.high == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-6)


def test_outcomes_count_none_as_failure_and_accept_tensors():
    assert metrics.success_rate([True, None, False, True]).successes == 2
    r = metrics.success_rate(torch.tensor([True] * 19 + [False]))
    assert (r.successes, r.n) == (19, 20) and r.low < 0.95 < r.high <= 1.0
    assert r.as_dict()["rate"] == 0.95


def test_a_wider_interval_at_higher_confidence_and_none_without_trials():
    a, b = metrics.success_rate(successes=5, n=20), metrics.success_rate(successes=5, n=20, confidence=0.99)
    assert b.low < a.low < a.high < b.high
    empty = metrics.success_rate([])
    assert math.isnan(empty.rate) and (empty.low, empty.high) == (0.0, 1.0) and empty.as_dict()["rate"] is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(successes=3, n=2), "cannot exceed"),
    (dict(successes=-1, n=2), "whole number"),
    (dict(successes=1.5, n=2), "whole number"),
    (dict(successes=1, n=2, confidence=1.0), "confidence"),
    (dict(successes=1, n=2, method="wald"), "wilson"),
    (dict(), "either outcomes"),
])
def test_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.success_rate(**kwargs)
