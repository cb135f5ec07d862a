"""Statistics of the experiment readout: relative lift, SRM, Holm, CUPED.

Pure numpy/scipy, no I/O. Written here rather than taken from a library
because the pieces are short, the readout needs them in one specific
combination (delta-method *relative* lift on possibly CUPED-adjusted means,
consistent p-value and interval), and statsmodels is not in the stack.

Conventions: ``treatment`` and ``control`` are per-customer metric arrays
(0/1 for conversion, amounts for revenue); lift is relative,
``mean_t / mean_c - 1``; intervals are two-sided at ``1 - alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
# SRM is a data-quality alarm, not a hypothesis of interest: a strict threshold
# keeps the alarm rare on healthy experiments across many slices and runs.
SRM_ALPHA = 0.001


@dataclass(frozen=True)
class LiftEstimate:
    """Relative lift of treatment over control with its delta-method interval."""

    mean_treatment: float
    mean_control: float
    lift: float | None  # None when the control mean is zero (lift undefined)
    se: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None

    @property
    def ci_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_high - self.ci_low

    @property
    def relative_se(self) -> float | None:
        """Standard error of log(1 + lift): the precision measure to compare two
        estimates of the same lift. The interval's width on the lift scale grows
        with the estimate itself, so comparing widths would favour whichever
        estimate happens to be lower."""
        if self.se is None or self.lift is None:
            return None
        ratio = 1.0 + self.lift
        return self.se / ratio if ratio > 0 else math.inf


def relative_lift_from_moments(
    mean_t: float,
    var_t: float,
    n_t: int,
    mean_c: float,
    var_c: float,
    n_c: int,
    *,
    alpha: float = ALPHA,
) -> LiftEstimate:
    """Delta-method interval for the relative lift ``mean_t / mean_c - 1``.

    The delta method is applied on the log scale:
    ``Var(log(mt/mc)) ~= var_t/(n_t mt^2) + var_c/(n_c mc^2)`` (independent
    arms), the interval ``exp(log(mt/mc) +- z se) - 1`` and the p-value the
    two-sided Wald test of ``log(mt/mc) = 0``, so "the interval excludes 0" and
    "p < alpha" always agree. For 0/1 metrics this is the Katz log interval of
    a risk ratio. The log scale matters: on the ratio scale the estimate's
    standard error grows with the estimate itself, which skews the Wald
    statistic (a high control rate by chance gives a small, "confident"
    negative lift) and over-rejects for arms with a few dozen conversions.
    When an arm mean is 0 the log is undefined and the ratio-scale delta
    method ``var_t/(n_t mc^2) + mt^2 var_c/(n_c mc^4)`` is used instead.
    """
    if n_t < 2 or n_c < 2 or mean_c <= 0:
        return LiftEstimate(float(mean_t), float(mean_c), None, None, None, None, None)
    ratio = mean_t / mean_c
    lift = ratio - 1.0
    z = float(sps.norm.ppf(1 - alpha / 2))
    if mean_t > 0:
        se_log = math.sqrt(max(var_t / (n_t * mean_t**2) + var_c / (n_c * mean_c**2), 0.0))
        log_ratio = math.log(ratio)
        # se_log == 0: every customer has the same value within each arm
        p = (
            (1.0 if log_ratio == 0 else 0.0)
            if se_log == 0
            else float(2 * sps.norm.sf(abs(log_ratio) / se_log))
        )
        return LiftEstimate(
            mean_treatment=float(mean_t),
            mean_control=float(mean_c),
            lift=float(lift),
            se=float(ratio * se_log),  # delta method back on the ratio scale
            ci_low=float(math.exp(log_ratio - z * se_log) - 1.0),
            ci_high=float(math.exp(log_ratio + z * se_log) - 1.0),
            p_value=p,
        )
    se = math.sqrt(max(var_t / (n_t * mean_c**2), 0.0))
    p = 0.0 if se == 0 else float(2 * sps.norm.sf(abs(lift) / se))
    return LiftEstimate(
        mean_treatment=float(mean_t),
        mean_control=float(mean_c),
        lift=float(lift),
        se=float(se),
        ci_low=float(lift - z * se),
        ci_high=float(lift + z * se),
        p_value=p,
    )


def relative_lift(
    treatment: np.ndarray, control: np.ndarray, *, alpha: float = ALPHA
) -> LiftEstimate:
    """Relative lift of the per-customer metric (unbiased sample variances)."""
    t = np.asarray(treatment, dtype=float)
    c = np.asarray(control, dtype=float)
    if t.size < 2 or c.size < 2:
        return LiftEstimate(
            float(t.mean()) if t.size else math.nan,
            float(c.mean()) if c.size else math.nan,
            None,
            None,
            None,
            None,
            None,
        )
    return relative_lift_from_moments(
        float(t.mean()),
        float(t.var(ddof=1)),
        int(t.size),
        float(c.mean()),
        float(c.var(ddof=1)),
        int(c.size),
        alpha=alpha,
    )


@dataclass(frozen=True)
class CupedEstimate:
    """CUPED-adjusted lift and how much variance the covariate removed."""

    estimate: LiftEstimate
    theta: float
    variance_reduction: float  # 1 - Var(adjusted) / Var(raw), pooled over both arms


def cuped_lift(
    treatment: np.ndarray,
    control: np.ndarray,
    covariate_treatment: np.ndarray,
    covariate_control: np.ndarray,
    *,
    alpha: float = ALPHA,
) -> CupedEstimate | None:
    """Lift on CUPED-adjusted metrics ``Y - theta (X - mean(X))``.

    ``theta = Cov(Y, X) / Var(X)`` is estimated on both arms pooled (Deng et
    al. 2013); because ``X`` is measured before assignment its mean is the same
    in both arms under randomisation, so the adjustment leaves the expected
    arm means - and hence the lift - unchanged while removing the part of the
    variance that ``X`` explains. The control mean used in the ratio is the
    adjusted one. Returns None when the covariate is constant (no information).
    """
    y_t = np.asarray(treatment, dtype=float)
    y_c = np.asarray(control, dtype=float)
    x_t = np.asarray(covariate_treatment, dtype=float)
    x_c = np.asarray(covariate_control, dtype=float)
    if y_t.shape != x_t.shape or y_c.shape != x_c.shape:
        raise ValueError("each arm's covariate must have one value per customer")
    if y_t.size < 2 or y_c.size < 2:
        return None
    y = np.concatenate([y_t, y_c])
    x = np.concatenate([x_t, x_c])
    var_x = float(x.var(ddof=1))
    if var_x <= 0:
        return None
    theta = float(np.cov(y, x, ddof=1)[0, 1] / var_x)
    x_mean = float(x.mean())
    adj_t = y_t - theta * (x_t - x_mean)
    adj_c = y_c - theta * (x_c - x_mean)
    var_raw = float(y.var(ddof=1))
    var_adj = float(np.concatenate([adj_t, adj_c]).var(ddof=1))
    reduction = 1.0 - var_adj / var_raw if var_raw > 0 else 0.0
    return CupedEstimate(relative_lift(adj_t, adj_c, alpha=alpha), theta, reduction)


def srm_p_value(n_control: int, n_treatment: int, control_share: float) -> float | None:
    """Chi-squared goodness-of-fit p-value of the arm sizes against ``control_share``.

    None when nothing was assigned or the design share is degenerate (0 or 1),
    where the test has no alternative to detect.
    """
    total = n_control + n_treatment
    if total == 0 or not 0.0 < control_share < 1.0:
        return None
    expected = [total * control_share, total * (1.0 - control_share)]
    result = sps.chisquare([n_control, n_treatment], f_exp=expected)
    return float(result.pvalue)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values (family-wise error control).

    ``None`` entries (untestable slices) are left out of the family and stay None.
    Adjusted values are monotone in the raw ones and capped at 1.
    """
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    # ties broken by position so the result does not depend on sort stability
    for rank, (p, i) in enumerate(sorted(indexed, key=lambda item: (item[0], item[1]))):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def gatekept_holm(
    p_primary: float | None, p_secondary: Sequence[float | None]
) -> list[float | None]:
    """Adjusted p-values of secondary tests behind a primary gatekeeper.

    Serial gatekeeping (hierarchical testing): the primary hypothesis is tested
    at alpha unadjusted; the secondary family is Holm-adjusted and can only be
    rejected once the primary is, so each secondary adjusted p-value is
    ``max(p_primary, holm_p)``. The probability of any false rejection, primary
    included, stays at alpha. An untestable primary (None) blocks the family.
    """
    gate = 1.0 if p_primary is None else p_primary
    return [None if q is None else max(q, gate) for q in holm_adjust(p_secondary)]
