"""Statistics of the experiment readout against textbook cases and simulations.

Simulations use fixed seeds, so each check is deterministic; tolerances are
about three Monte-Carlo standard errors of the simulated quantity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from segment_warehouse.experiments import stats

REPS = 2000
# 95 % coverage over REPS runs: MC standard error sqrt(.95 * .05 / 2000) ~ 0.005
COVERAGE_RANGE = (0.935, 0.965)


def test_katz_log_interval_of_a_risk_ratio() -> None:
    # p_t = 0.12, p_c = 0.10, n = 1000 each, Bernoulli variances p(1-p).
    # Katz et al. (1978): SE(log RR) = sqrt((1-p_t)/(n p_t) + (1-p_c)/(n p_c))
    #                                = sqrt(0.88/120 + 0.9/100) = 0.127802
    est = stats.relative_lift_from_moments(0.12, 0.1056, 1000, 0.10, 0.09, 1000)
    se_log = math.sqrt(0.88 / 120 + 0.9 / 100)
    assert se_log == pytest.approx(0.127802, abs=1e-6)
    assert est.lift == pytest.approx(0.2)
    assert est.ci_low == pytest.approx(math.exp(math.log(1.2) - 1.959964 * se_log) - 1, abs=1e-6)
    assert est.ci_high == pytest.approx(math.exp(math.log(1.2) + 1.959964 * se_log) - 1, abs=1e-6)
    assert est.ci_low == pytest.approx(-0.065896, abs=1e-5)
    assert est.ci_high == pytest.approx(0.541581, abs=1e-5)
    z = math.log(1.2) / se_log  # 1.42658
    assert est.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert est.p_value == pytest.approx(0.15370, abs=1e-4)
    assert est.se == pytest.approx(1.2 * se_log)


def test_relative_se_compares_precision_not_level() -> None:
    # relative_se is the log-scale SE; on the lift scale the higher estimate's
    # interval is wider even though its relative precision is about the same
    low = stats.relative_lift_from_moments(0.11, 0.11 * 0.89, 4000, 0.10, 0.09, 4000)
    high = stats.relative_lift_from_moments(0.13, 0.13 * 0.87, 4000, 0.10, 0.09, 4000)
    assert high.ci_width > low.ci_width
    se_log = math.sqrt(0.87 / (4000 * 0.13) + 0.9 / 4000 / 0.10)
    assert high.relative_se == pytest.approx(se_log)
    assert stats.relative_lift_from_moments(0.0, 0.0, 10, 0.1, 0.09, 10).relative_se is not None


def test_ratio_scale_fallback_when_treatment_mean_is_zero() -> None:
    # log undefined: ratio-scale delta method, Var = var_t/(n_t mc^2) (var_t = 0 here)
    est = stats.relative_lift_from_moments(0.0, 0.0, 500, 0.1, 0.09, 500)
    assert est.lift == pytest.approx(-1.0)
    assert est.p_value == 0.0


def test_p_value_and_interval_agree() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        t = rng.binomial(1, 0.11, 800)
        c = rng.binomial(1, 0.10, 800)
        est = stats.relative_lift(t, c)
        excludes_zero = est.ci_low > 0 or est.ci_high < 0
        assert excludes_zero == (est.p_value < 0.05)


def test_delta_se_matches_bootstrap() -> None:
    rng = np.random.default_rng(2)
    t = rng.binomial(1, 0.15, 3000).astype(float)
    c = rng.binomial(1, 0.12, 3000).astype(float)
    est = stats.relative_lift(t, c)
    boots = [rng.choice(t, t.size).mean() / rng.choice(c, c.size).mean() - 1 for _ in range(2000)]
    assert est.se == pytest.approx(float(np.std(boots, ddof=1)), rel=0.08)


def test_lift_undefined_without_control_conversions() -> None:
    est = stats.relative_lift(np.array([0, 1, 0, 1]), np.zeros(4))
    assert est.lift is None and est.ci_low is None and est.p_value is None
    assert est.mean_treatment == 0.5


def _coverage(p_c: float, lift: float, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(REPS):
        t = rng.binomial(1, p_c * (1 + lift), n)
        c = rng.binomial(1, p_c, n)
        est = stats.relative_lift(t, c)
        hits += est.ci_low <= lift <= est.ci_high
    return hits / REPS


def test_aa_small_counts_calibrated_in_both_tails() -> None:
    # ~15 conversions per arm: a ratio-scale Wald test rejects far too often in
    # the "treatment worse" tail; the log-scale test keeps each tail near 2.5 %
    rng = np.random.default_rng(10)
    low = high = 0
    for _ in range(REPS):
        est = stats.relative_lift(rng.binomial(1, 0.05, 300), rng.binomial(1, 0.05, 300))
        if est.ci_high is not None and est.ci_high < 0:
            low += 1
        if est.ci_low is not None and est.ci_low > 0:
            high += 1
    assert low / REPS <= 0.035 and high / REPS <= 0.035
    assert (low + high) / REPS <= 0.06


def test_aa_interval_covers_zero_95_percent() -> None:
    coverage = _coverage(p_c=0.10, lift=0.0, n=2000, seed=11)
    assert COVERAGE_RANGE[0] <= coverage <= COVERAGE_RANGE[1]


def test_planted_lift_interval_covers_truth_95_percent() -> None:
    coverage = _coverage(p_c=0.10, lift=0.20, n=2000, seed=12)
    assert COVERAGE_RANGE[0] <= coverage <= COVERAGE_RANGE[1]


def test_planted_lift_on_skewed_revenue_covered() -> None:
    # revenue per customer: 80 % zeros, lognormal spend otherwise; treatment x1.15
    rng = np.random.default_rng(13)
    hits = 0
    for _ in range(REPS):
        c = rng.binomial(1, 0.2, 3000) * rng.lognormal(3.5, 0.8, 3000)
        t = rng.binomial(1, 0.2, 3000) * rng.lognormal(3.5, 0.8, 3000) * 1.15
        est = stats.relative_lift(t, c)
        hits += est.ci_low <= 0.15 <= est.ci_high
    assert COVERAGE_RANGE[0] <= hits / REPS <= COVERAGE_RANGE[1]


def test_srm_textbook_values() -> None:
    # 52 vs 48 against 50/50: chi2 = 2 * 2^2 / 50 = 0.16; with 1 degree of
    # freedom the tail is erfc(sqrt(chi2 / 2)) = 0.6892
    assert stats.srm_p_value(52, 48, 0.5) == pytest.approx(math.erfc(math.sqrt(0.08)))
    assert stats.srm_p_value(52, 48, 0.5) == pytest.approx(0.68916, abs=1e-4)
    # a 45/55 split at n = 10 000: chi2 = 100 -> p ~ 1.5e-23
    p_bad = stats.srm_p_value(4500, 5500, 0.5)
    assert p_bad is not None and p_bad < 1e-20 < stats.SRM_ALPHA
    # unequal design share: 30/70 observed exactly
    assert stats.srm_p_value(3000, 7000, 0.3) == pytest.approx(1.0)
    assert stats.srm_p_value(0, 0, 0.5) is None
    assert stats.srm_p_value(10, 10, 1.0) is None


def test_srm_quiet_on_fair_split() -> None:
    rng = np.random.default_rng(14)
    alarms = 0
    for _ in range(REPS):
        n_control = int(rng.binomial(10_000, 0.5))
        alarms += stats.srm_p_value(n_control, 10_000 - n_control, 0.5) < stats.SRM_ALPHA
    # expected 2 alarms in 2000 at alpha 0.001
    assert alarms <= 8
    # and a 45/55 split drawn at random is always caught
    for _ in range(50):
        n_control = int(rng.binomial(10_000, 0.45))
        assert stats.srm_p_value(n_control, 10_000 - n_control, 0.5) < stats.SRM_ALPHA


def test_holm_textbook_example() -> None:
    adjusted = stats.holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm_adjust([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert stats.holm_adjust([]) == []


def test_gatekept_holm() -> None:
    # primary significant: segments get their Holm values (never below the gate)
    assert stats.gatekept_holm(0.01, [0.01, 0.04, 0.03, 0.005]) == pytest.approx(
        [0.03, 0.06, 0.06, 0.02]
    )
    assert stats.gatekept_holm(0.025, [0.001]) == pytest.approx([0.025])
    # primary not significant: nothing behind it can be
    assert all(q >= 0.2 for q in stats.gatekept_holm(0.2, [0.0001, 0.5]))
    assert stats.gatekept_holm(None, [0.0001, None]) == [1.0, None]


def test_gatekeeping_keeps_family_wise_error_at_alpha() -> None:
    # global null, one overall test and 6 segments of 1 000 customers per arm each
    rng = np.random.default_rng(17)
    false_claims = 0
    for _ in range(REPS // 4):
        seg_t = [rng.binomial(1, 0.1, 1000) for _ in range(6)]
        seg_c = [rng.binomial(1, 0.1, 1000) for _ in range(6)]
        p_all = stats.relative_lift(np.concatenate(seg_t), np.concatenate(seg_c)).p_value
        seg_p = [stats.relative_lift(t, c).p_value for t, c in zip(seg_t, seg_c, strict=True)]
        adjusted = [p_all, *stats.gatekept_holm(p_all, seg_p)]
        false_claims += any(q is not None and q < 0.05 for q in adjusted)
    # 500 runs: MC standard error of a 5 % rate ~ 1 %
    assert false_claims / (REPS // 4) <= 0.08


def _cuped_sample(rng: np.random.Generator, n: int, lift: float) -> tuple[np.ndarray, ...]:
    # pre-period spend x predicts in-window spend y; treatment scales y
    x_t = rng.gamma(2.0, 20.0, n)
    x_c = rng.gamma(2.0, 20.0, n)
    y_t = (10 + 0.8 * x_t + rng.normal(0, 15, n)) * (1 + lift)
    y_c = 10 + 0.8 * x_c + rng.normal(0, 15, n)
    return y_t, y_c, x_t, x_c


def test_cuped_narrows_interval_and_is_unbiased() -> None:
    rng = np.random.default_rng(15)
    lift = 0.10
    narrower = 0
    cuped_lifts: list[float] = []
    hits = 0
    for _ in range(500):
        y_t, y_c, x_t, x_c = _cuped_sample(rng, 1000, lift)
        raw = stats.relative_lift(y_t, y_c)
        adj = stats.cuped_lift(y_t, y_c, x_t, x_c)
        assert adj is not None
        narrower += adj.estimate.ci_width < raw.ci_width
        assert adj.estimate.relative_se < raw.relative_se
        cuped_lifts.append(adj.estimate.lift)
        hits += adj.estimate.ci_low <= lift <= adj.estimate.ci_high
        assert adj.variance_reduction > 0.5
    assert narrower == 500
    # mean of 500 estimates: MC standard error ~ 0.0012
    assert float(np.mean(cuped_lifts)) == pytest.approx(lift, abs=0.004)
    assert 0.92 <= hits / 500 <= 0.98


def test_cuped_with_useless_covariate_changes_little() -> None:
    rng = np.random.default_rng(16)
    y_t = rng.normal(50, 10, 2000)
    y_c = rng.normal(50, 10, 2000)
    adj = stats.cuped_lift(y_t, y_c, rng.normal(size=2000), rng.normal(size=2000))
    raw = stats.relative_lift(y_t, y_c)
    assert adj is not None
    assert abs(adj.variance_reduction) < 0.01
    assert adj.estimate.ci_width == pytest.approx(raw.ci_width, rel=0.02)
    assert stats.cuped_lift(y_t, y_c, np.ones(2000), np.ones(2000)) is None
    with pytest.raises(ValueError):
        stats.cuped_lift(y_t, y_c, np.ones(3), np.ones(2000))
