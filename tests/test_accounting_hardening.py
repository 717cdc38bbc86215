"""Hardening of the privacy accounting (issue 14, "impossible numbers reported"): every public epsilon
function refuses a meaningless delta, out-of-range noise multipliers, sample rates and steps, and PRV grids
that would exhaust memory, in one clear ValueError; never reports a negative epsilon; and train_dp checks
its accounting before any training."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest

from gleak_edu import cli
from gleak_edu.defenses import (
    epsilon,
    epsilon_for_steps,
    gaussian_epsilon,
    get_noise_multiplier,
    history_from_noise_multipliers,
    noise_schedule,
    schedule_epsilon,
    train_dp,
)
from gleak_edu.defenses.accounting import (
    DELTA_LIMIT,
    MAX_SEGMENTS,
    MAX_STEPS,
    NOISE_MULTIPLIER_RANGE,
    DeltaWarning,
    check_delta,
    check_history,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:GDP accounting is experimental"),
    pytest.mark.filterwarnings("ignore:Optimal order"),
]

HISTORY = [(2.0, 0.05, 20), (1.5, 0.05, 20), (1.0, 0.05, 20)]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gleak: error: "), err
    return err[0]


# --- delta: (0, 1), and refused from 0.1 on (no meaningful guarantee)

@pytest.mark.parametrize("delta", [0.5, 0.9, 0.1, 0.99])
def test_a_delta_without_meaningful_guarantee_is_refused_by_every_epsilon_function(delta):
    """Before: epsilon(..., delta=0.5) was -0.69 and train's epsilon at delta 0.9 was -2.3."""
    calls = [
        lambda: epsilon([(5.0, 0.01, 10)], delta),
        lambda: epsilon(HISTORY, delta, "prv"),
        lambda: epsilon([(2.0, 0.05, 20)], delta, "gdp"),
        lambda: gaussian_epsilon(2.0, delta),
        lambda: epsilon_for_steps(1.0, 0.1, 10, delta),
        lambda: epsilon_for_steps(1.0, 0.1, 0, delta),
        lambda: epsilon_for_steps(1.0, 0.1, 10, delta, accountant="prv"),
        lambda: schedule_epsilon("linear", 50, 3.0, 0.5, 0.02, delta),
        lambda: get_noise_multiplier(1.0, 50, 0.02, delta),
        lambda: check_delta(delta),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="no meaningful guarantee.*far below 1/n"):
            call()


@pytest.mark.parametrize("delta", [0.0, 1.0, 2.0, -1e-5, math.nan, math.inf, "1e-5", True, None])
def test_delta_outside_the_open_unit_interval_or_not_a_number_is_a_value_error(delta):
    for call in (lambda: epsilon(HISTORY, delta), lambda: gaussian_epsilon(2.0, delta)):
        with pytest.raises(ValueError, match="delta"):
            call()


def test_delta_at_or_above_one_over_n_warns_when_the_dataset_size_is_known():
    assert DELTA_LIMIT == 0.1 and issubclass(DeltaWarning, UserWarning)
    with pytest.warns(DeltaWarning, match="1/n"):
        epsilon([(1.0, 0.01, 10)], 0.05, dataset_size=50)
    with pytest.warns(DeltaWarning):
        gaussian_epsilon(2.0, 1e-3, dataset_size=1000)
    with pytest.warns(DeltaWarning):
        epsilon_for_steps(1.0, 0.01, 10, 1e-2, dataset_size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # far below 1/n: silent
        epsilon([(1.0, 0.01, 10)], 1e-5, dataset_size=4000)
    with pytest.raises(ValueError, match="dataset_size"):
        epsilon([(1.0, 0.01, 10)], 1e-5, dataset_size=0)


def test_epsilon_command_refuses_delta_one_half_in_one_line(capsys):
    assert cli.main(["epsilon", "--history", "5:0.01:10", "--delta", "0.5"]) == 2
    line = _one_line_error(capsys)
    assert "no meaningful guarantee" in line and "-0.69" not in line


def test_train_command_refuses_delta_0_9_before_any_training(tmp_path, capsys):
    """Before: it trained, attacked and reported epsilon -2.3."""
    out = tmp_path / "t.json"
    start = time.perf_counter()
    code = cli.main(["train", "--dp", "fixed", "--delta", "0.9", "--epochs", "1", "--json", str(out)])
    seconds = time.perf_counter() - start
    assert code == 2 and not out.exists()
    assert "no meaningful guarantee" in _one_line_error(capsys)
    assert seconds < 10, f"took {seconds:.1f} s: something ran before delta was checked"


def test_train_dp_checks_its_accounting_before_training(monkeypatch):
    """delta, the noise history's range and the PRV grid are checked before the first step."""
    import torch

    from gleak_edu.defenses import dpsgd

    def no_training(*args, **kwargs):  # pragma: no cover - reached only if a check is missing
        raise AssertionError("training started before the accounting was checked")

    monkeypatch.setattr(dpsgd, "train_perturbed", no_training)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(ValueError, match="no meaningful guarantee"):
        train_dp(model, (x, y), (x, y), noise_multiplier=1.0, delta=0.9, epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="no meaningful guarantee"):
        train_dp(model, (x, y), (x, y), noise_multiplier=None, delta=0.5, epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="outside"):
        train_dp(model, (x, y), (x, y), noise_multiplier=noise_schedule("exponential", 2, 1.0, 1e-9),
                 epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="PRV accountant would need a grid"):
        train_dp(model, (x, y), (x, y), noise_multiplier=0.01, accountant="prv", epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="PRV accountant .* returned epsilon inf"):  # found by computing it first
        train_dp(model, (x, y), (x, y), noise_multiplier=0.04, accountant="prv", epochs=1, batch_size=32)
    with pytest.warns(DeltaWarning), pytest.raises(AssertionError, match="training started"):
        train_dp(model, (x, y), (x, y), noise_multiplier=1.0, delta=0.05, epochs=1, batch_size=32)  # 0.05 >= 1/64


# --- epsilon is never negative

def test_epsilon_is_never_negative_over_a_grid_of_deltas_and_histories():
    """Before: conversions went negative for large deltas (delta 0.01 already gave -0.0085 at sigma 100)."""
    deltas = (1e-12, 1e-8, 1e-5, 1e-3, 0.01, 0.05, 0.0999)
    histories = [[(s, q, n)] for s in (0.5, 1.0, 5.0, 100.0, 1e4, 1e6) for q in (0.001, 0.01, 0.3, 1.0) for n in (1, 10)]
    histories.append(HISTORY)
    for delta in deltas:
        for h in histories:
            eps = epsilon(h, delta)
            assert eps >= 0 and math.isfinite(eps), (h, delta, eps)
    for delta in (0.01, 0.05):
        assert epsilon([(100.0, 0.01, 10)], delta, "prv") >= 0
        assert epsilon_for_steps(1e4, 0.01, 10, delta) == 0.0  # clamped: (eps<0, delta)-DP implies (0, delta)-DP
        assert gaussian_epsilon(1e6, delta) > 0


# --- noise multipliers: out of range is a clear ValueError, not ZeroDivision/Overflow

@pytest.mark.parametrize("noise_multiplier", [1e-300, 1e-7, 1e7, 1e300, -1.0, math.inf, math.nan])
def test_out_of_range_noise_multipliers_are_a_clear_value_error(noise_multiplier):
    """Before: 1e-300 raised ZeroDivisionError and 1e300 OverflowError from inside Opacus."""
    for accountant in ("rdp", "prv", "gdp"):
        with pytest.raises(ValueError, match="noise_multiplier"):
            epsilon([(noise_multiplier, 0.01, 10)], 1e-5, accountant)
    for call in (lambda: epsilon_for_steps(noise_multiplier, 0.01, 10), lambda: gaussian_epsilon(noise_multiplier),
                 lambda: schedule_epsilon("fixed", 10, noise_multiplier, None, 0.01)):
        with pytest.raises(ValueError, match="noise_multiplier"):
            call()
    with pytest.raises(ValueError, match="bad segment 0"):
        epsilon([(noise_multiplier, 0.01, 10)], 1e-5)


def test_the_ends_of_the_noise_range_are_accounted():
    low, high = NOISE_MULTIPLIER_RANGE
    assert epsilon([(low, 0.01, 10)], 1e-5) > 1e12  # no guarantee at all, but a finite, valid bound
    assert 0 < epsilon([(high, 0.01, 10)], 1e-5) < 0.11  # the RDP conversion's floor at delta 1e-5
    assert epsilon([(0.0, 0.1, 3)], 1e-5) == math.inf and gaussian_epsilon(0.0) == math.inf  # no noise


@pytest.mark.parametrize("segment,message", [
    ((1.0, 0.0, 10), "sample_rate"), ((1.0, 1.5, 10), "sample_rate"), ((1.0, math.nan, 10), "sample_rate"),
    ((1.0, 0.01, 0), "steps"), ((1.0, 0.01, -3), "steps"), ((1.0, 0.01, 2.5), "steps"),
    ((1.0, 0.01, math.inf), "steps"), ((1.0, 0.01, True), "steps"), ((1.0, 0.01), "must be"),
    ((1.0, 0.01, MAX_STEPS + 1), "more than this course accounts"), ((1.0, 0.01, 10**400), "more than this course"),
])
def test_bad_sample_rates_and_steps_are_refused(segment, message):
    with pytest.raises(ValueError, match=message):
        epsilon([segment], 1e-5)


def test_step_and_segment_counts_are_bounded_before_any_work():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="segments"):
        epsilon([(1.0 + i * 1e-6, 0.01, 1) for i in range(MAX_SEGMENTS + 1)], 1e-5)
    with pytest.raises(ValueError, match="steps"):
        schedule_epsilon("linear", 10**9, 3.0, 0.5, 0.01)  # not a billion-entry schedule first
    assert time.perf_counter() - start < 5


# --- PRV: the grid is sized before Opacus allocates it

def test_prv_with_100000_steps_at_q_one_half_is_refused_quickly():
    """Before: MemoryError (hundreds of GiB) from inside Opacus."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match="PRV accountant would need a grid of .* use accountant 'rdp'"):
        epsilon([(1.0, 0.5, 100_000)], 1e-5, "prv")
    with pytest.raises(ValueError, match="PRV accountant would need a grid"):
        check_history([(1.0, 0.5, 100_000)], 1e-5, "prv")
    with pytest.raises(ValueError, match="PRV accountant would need a grid"):
        epsilon([(1e-3, 0.01, 10)], 1e-5, "prv")  # tiny noise: 1.1e10 points
    assert time.perf_counter() - start < 10
    assert epsilon([(1.0, 0.5, 100_000)], 1e-5, "rdp") > 0  # the suggested accountant answers


# --- the accountant's own failures: one line naming the accountant and the segment

def test_opacus_failures_become_one_clear_value_error():
    with pytest.raises(ValueError, match=r"the GDP accountant \(Opacus\) failed on the history \(0\.1, 0\.01, 10\)") as gdp:
        epsilon([(0.1, 0.01, 10)], 1e-5, "gdp")
    assert "\n" not in str(gdp.value) and "'rdp' or 'prv'" in str(gdp.value)



def test_prv_never_reports_an_infinite_or_saturated_epsilon():
    """Opacus's PRV returned inf for (0.04, 0.5, 2), and 705 for (0.025, 0.01, 1) where the RDP bound is 941."""
    with pytest.raises(ValueError, match="PRV accountant .* returned epsilon inf .* use accountant 'rdp'"):
        epsilon([(0.04, 0.5, 2)], 1e-5, "prv")
    with pytest.raises(ValueError, match="PRV accountant .* saturates"):
        epsilon([(0.025, 0.01, 1)], 1e-5, "prv")
    with pytest.raises(ValueError, match="saturates"):
        check_history([(0.025, 0.01, 1)], 1e-5, "prv")
    assert epsilon([(0.025, 0.01, 1)], 1e-5, "rdp") > 900
    assert 600 < epsilon([(0.03, 0.01, 1)], 1e-5, "prv") < 700  # below the ceiling PRV is right (RDP: 672)


@pytest.mark.skipif(np.finfo(np.longdouble).eps < 1e-20, reason="Opacus's PRV precision check uses x86's 80-bit long double")
def test_a_prv_failure_names_the_segment_that_fails():
    # Opacus: "Floating point errors will dominate for such small values of delta" (long double eps x grid > delta);
    # sigma 4 alone has a small grid and passes, sigma 0.3 alone does not
    assert epsilon([(4.0, 0.01, 10)], 1e-14, "prv") > 0
    with pytest.raises(ValueError, match=r"the PRV accountant \(Opacus\) failed on segment 1 \(0\.3, 0\.01, 10\)") as prv:
        epsilon([(4.0, 0.01, 10), (0.3, 0.01, 10)], 1e-14, "prv")
    assert "\n" not in str(prv.value) and "Floating point errors" in str(prv.value) and "use accountant 'rdp'" in str(prv.value)


def test_cli_epsilon_reports_extreme_histories_in_one_line(capsys):
    for history, accountant, message in (
        ("1e-300:0.01:10", "rdp", "outside"),
        ("1e300:0.01:10", "rdp", "outside"),
        ("1:0.5:100000", "prv", "PRV accountant would need a grid"),
        ("0.1:0.01:10", "gdp", "GDP accountant (Opacus) failed"),
    ):
        assert cli.main(["epsilon", "--history", history, "--accountant", accountant]) == 2
        assert message in _one_line_error(capsys)


# --- normal inputs: unchanged, and still Opacus's numbers

def test_normal_inputs_still_match_opacus():
    from opacus.accountants import PRVAccountant, RDPAccountant

    for name, cls in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        acc = cls()
        acc.history = list(HISTORY)
        assert epsilon(HISTORY, 1e-5, name) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    assert epsilon_for_steps(1.1, 0.016, 100) == pytest.approx(epsilon([(1.1, 0.016, 100)]), rel=1e-12)
    assert epsilon_for_steps(1.1, 0.016, 100, accountant="prv") == pytest.approx(
        epsilon([(1.1, 0.016, 100)], 1e-5, "prv"), rel=1e-12)
    multipliers = [3.0 - 2.5 * t / 125 for t in range(126)]
    assert schedule_epsilon("linear", 126, 3.0, 0.5, 0.016) == pytest.approx(
        epsilon(history_from_noise_multipliers(multipliers, 0.016), 1e-5), rel=1e-9)
    assert epsilon([], 1e-5) == 0.0 and epsilon_for_steps(1.0, 0.1, 0) == 0.0  # nothing released


def test_get_noise_multiplier_does_not_blow_up_for_extreme_targets():
    for target in (1e-300, 1e300):
        with pytest.raises(ValueError, match="not reachable"):
            get_noise_multiplier(target, 100, 0.01)
    for target in (math.nan, math.inf, 0.0, -1.0):
        with pytest.raises(ValueError, match="target_epsilon"):
            get_noise_multiplier(target, 100, 0.01)
    with pytest.raises(ValueError, match="outside"):
        get_noise_multiplier(1.0, 100, 0.01, low=1e-300)
    with pytest.raises(ValueError, match="low < high"):
        get_noise_multiplier(1.0, 100, 0.01, low=5.0, high=1.0)
    with pytest.raises(ValueError, match="steps"):
        get_noise_multiplier(1.0, 10**9, 0.01)
    matched = get_noise_multiplier(1.0, 100, 0.01)
    assert epsilon([(matched, 0.01, 100)], 1e-5) == pytest.approx(1.0, rel=1e-3)


def test_train_json_never_holds_a_negative_epsilon(tmp_path):
    out = tmp_path / "t.json"
    assert cli.main(["train", "--dp", "fixed", "--noise-multiplier", "50", "--delta", "0.05", "--epochs", "1",
                     "--attack-steps", "0", "--images", "1", "--iterations", "5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["epsilon"] >= 0
