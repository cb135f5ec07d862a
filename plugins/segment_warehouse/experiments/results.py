"""measure(): intention-to-treat readout of every experiment -> experiment_results.

Reads ``personalisation.experiments``, ``personalisation.experiment_assignments``
and ``marts.fct_orders`` and replaces ``personalisation.experiment_results``
as a whole on every run, so erasure (which deletes a person's assignment and
orders) is reflected in all results, past windows included, at the next run.

Windows are whole UTC days. A customer assigned on day ``A`` (the as-of date
of the run that first matched them) is measured on the order days
``A + 1 .. A + window_days``, i.e. ``order_ts`` in
``[A + 1 00:00, A + window_days + 1 00:00)`` UTC - the DESIGN.md interval
``(assigned_at, assigned_at + window_days]`` read on dates. They count only
once that window has closed: ``assigned_at + window_days <= as_of``. The
pre-period covariate for CUPED is the same metric over the days
``A - window_days + 1 .. A`` (before the customer could have seen anything).
Only completed orders count (``is_completed``: the latest version of the order
is ``completed``; refunded, cancelled and pending orders do not).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import numpy as np

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.experiments import stats
from segment_warehouse.warehouse import ensure_schemas, table_exists, warehouse

log = logging.getLogger(__name__)

RESULTS_TABLE = "personalisation.experiment_results"
VARIANTS: tuple[str, str] = ("control", "treatment")
ALL_SEGMENT = "all"
NO_SEGMENT = "(no segment)"
# Below these sizes a readout is noise; the page says "not enough data yet".
MIN_CUSTOMERS_PER_ARM = 100
MIN_CONVERSIONS = 10

# (name, DuckDB type); the first eleven plus srm_p_value are DESIGN.md section 7.
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiment_id", "varchar"),
    ("segment", "varchar"),
    ("variant", "varchar"),
    ("customers", "bigint"),
    ("conversions", "bigint"),
    ("conversion_rate", "double"),
    ("revenue_per_customer", "double"),
    ("lift", "double"),
    ("lift_ci_low", "double"),
    ("lift_ci_high", "double"),
    ("p_value", "double"),
    ("p_value_adjusted", "double"),
    ("srm_p_value", "double"),
    ("srm_warning", "boolean"),
    ("cuped_lift", "double"),
    ("cuped_ci_low", "double"),
    ("cuped_ci_high", "double"),
    ("cuped_p_value", "double"),
    ("cuped_variance_reduction", "double"),
    ("decision_basis", "varchar"),
    ("revenue_lift", "double"),
    ("revenue_lift_ci_low", "double"),
    ("revenue_lift_ci_high", "double"),
    ("revenue_p_value", "double"),
    ("cuped_revenue_lift", "double"),
    ("cuped_revenue_ci_low", "double"),
    ("cuped_revenue_ci_high", "double"),
    ("customers_pending", "bigint"),
    ("control_share", "double"),
    ("window_days", "integer"),
    ("as_of_date", "date"),
    ("verdict", "varchar"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in RESULT_COLUMNS)


class ExperimentDataError(ValueError):
    """The experiment definitions or assignments break the contract."""


@dataclass(frozen=True)
class MeasureResult:
    run_id: str
    as_of: str
    experiments: int
    result_rows: int
    customers_measured: int  # assignments with a closed window, summed over experiments
    customers_pending: int  # assignments whose window is still open
    srm_warnings: list[str] = field(default_factory=list)  # "experiment_id/segment"
    effects: list[str] = field(default_factory=list)  # "experiment_id/segment: verdict"
    report_path: str | None = None


# --- SQL ---------------------------------------------------------------------------
# date + integer and date - integer mean "days" in both DuckDB and Spark SQL.
_EXPERIMENTS_SQL = """
select experiment_id, rule_id, slot_id, content_id, default_content_id,
       control_share, start_date, end_date, window_days
from personalisation.experiments
order by experiment_id
"""

_CUSTOMERS_SQL = """
with assigned as (
    select a.experiment_id, a.customer_id, a.variant, a.assigned_at,
           a.segment_name_at_assignment as segment, e.window_days
    from personalisation.experiment_assignments a
    join personalisation.experiments e on e.experiment_id = a.experiment_id
    where a.assigned_at + e.window_days <= ?
),
orders as (
    select customer_id, cast(order_ts as date) as order_date,
           coalesce(total_amount_reporting, 0) as amount
    from marts.fct_orders
    where is_completed
      and customer_id in (select customer_id from assigned)
)
select a.experiment_id, a.segment, a.variant, a.customer_id,
       sum(case when o.order_date > a.assigned_at then 1 else 0 end) as orders_in_window,
       sum(case when o.order_date > a.assigned_at then o.amount else 0 end) as revenue,
       sum(case when o.order_date <= a.assigned_at then 1 else 0 end) as pre_orders,
       sum(case when o.order_date <= a.assigned_at then o.amount else 0 end) as pre_revenue
from assigned a
left join orders o
  on o.customer_id = a.customer_id
 and o.order_date > a.assigned_at - a.window_days
 and o.order_date <= a.assigned_at + a.window_days
group by a.experiment_id, a.segment, a.variant, a.customer_id
order by a.experiment_id, a.customer_id
"""

_PENDING_SQL = """
select a.experiment_id, a.segment_name_at_assignment as segment, a.variant, count(*) as n
from personalisation.experiment_assignments a
join personalisation.experiments e on e.experiment_id = a.experiment_id
where not (a.assigned_at + e.window_days <= ?)
group by a.experiment_id, a.segment_name_at_assignment, a.variant
order by 1, 2, 3
"""

_CHECK_SQL = """
select
  (select count(*) from personalisation.experiment_assignments
    where variant is null or variant not in ('treatment', 'control')) as bad_variants,
  (select count(*) from personalisation.experiment_assignments where assigned_at is null)
    as no_date,
  (select count(*) from personalisation.experiment_assignments a
    where not exists (select 1 from personalisation.experiments e
                      where e.experiment_id = a.experiment_id)) as orphans
"""


def _segment_label(raw: Any) -> str:
    if raw is None:
        return NO_SEGMENT
    name = str(raw)
    # "all" is the whole-experiment slice; a segment that happens to share the name
    # must not be merged into it.
    return f"{name} (segment)" if name == ALL_SEGMENT else name


def _check_inputs(con: duckdb.DuckDBPyConnection, experiments: list[dict[str, Any]]) -> None:
    ids = [exp["experiment_id"] for exp in experiments]
    duplicates = sorted({str(i) for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ExperimentDataError(
            f"personalisation.experiments has more than one row for {', '.join(duplicates)}"
        )
    for exp in experiments:
        eid = exp["experiment_id"]
        window = exp["window_days"]
        if window is None or int(window) < 1:
            raise ExperimentDataError(f"experiment {eid!r}: window_days must be >= 1, got {window}")
        share = exp["control_share"]
        if share is None or not 0.0 <= float(share) <= 1.0:
            raise ExperimentDataError(
                f"experiment {eid!r}: control_share must be in [0, 1], got {share}"
            )
    row = con.execute(_CHECK_SQL).fetchone()
    assert row is not None
    bad_variants, no_date, orphans = (int(v) for v in row)
    if bad_variants:
        raise ExperimentDataError(
            f"{bad_variants} experiment assignment(s) have a variant other than "
            "'treatment' or 'control'"
        )
    if no_date:
        raise ExperimentDataError(f"{no_date} experiment assignment(s) have no assigned_at")
    if orphans:
        # decide writes the definition with the first assignment; an orphan means an
        # experiment row was removed by hand. Its customers cannot be measured.
        log.warning("%d assignment(s) name an experiment that is not defined; ignored", orphans)


# --- statistics per slice -------------------------------------------------------------
@dataclass
class _Arm:
    converted: np.ndarray
    revenue: np.ndarray
    pre_orders: np.ndarray
    pre_revenue: np.ndarray

    @property
    def n(self) -> int:
        return int(self.converted.size)


def _arm(rows: list[tuple[Any, ...]]) -> _Arm:
    if not rows:
        empty = np.zeros(0)
        return _Arm(empty, empty, empty, empty)
    arr = np.asarray([r[1:] for r in rows], dtype=float)
    return _Arm((arr[:, 0] > 0).astype(float), arr[:, 1], arr[:, 2], arr[:, 3])


def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def _verdict(
    *,
    n_c: int,
    n_t: int,
    conversions: int,
    pending: int,
    decision: stats.LiftEstimate,
    p_adjusted: float | None,
    srm_fail: bool,
    cuped: bool = False,
) -> str:
    prefix = "sample ratio mismatch - do not trust this split; " if srm_fail else ""
    if (
        min(n_c, n_t) < MIN_CUSTOMERS_PER_ARM
        or conversions < MIN_CONVERSIONS
        or decision.lift is None
        or decision.ci_low is None
        or decision.ci_high is None
    ):
        open_note = f", {pending} still in their window" if pending else ""
        return (
            f"{prefix}not enough data yet ({n_c} control / {n_t} treatment customers "
            f"with a closed window{open_note})"
        )
    interval = f"95 % CI {_pct(decision.ci_low)} to {_pct(decision.ci_high)}"
    if cuped:
        interval += ", CUPED-adjusted"
    if p_adjusted is not None and p_adjusted < stats.ALPHA:
        word = "better" if decision.lift > 0 else "worse"
        return f"{prefix}treatment {word} by {abs(decision.lift) * 100:.1f} % ({interval})"
    if p_adjusted is not None and (decision.ci_low > 0 or decision.ci_high < 0):
        # significant on its own, not after the correction for the other slices
        return (
            f"{prefix}no effect declared after the multiple-testing correction "
            f"({interval}; adjusted p = {p_adjusted:.2g})"
        )
    return f"{prefix}no detectable effect ({interval})"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _slice_rows(
    exp: dict[str, Any],
    segment: str,
    arms: dict[str, _Arm],
    pending: dict[str, int],
    as_of: date,
) -> tuple[list[dict[str, Any]], stats.LiftEstimate | None]:
    """Result rows of one (experiment, segment) slice, and its decision estimate."""
    control, treatment = arms["control"], arms["treatment"]
    share = float(exp["control_share"])
    srm = stats.srm_p_value(control.n, treatment.n, share)
    srm_fail = srm is not None and srm < stats.SRM_ALPHA
    conv = stats.relative_lift(treatment.converted, control.converted)
    rev = stats.relative_lift(treatment.revenue, control.revenue)
    cuped_conv = stats.cuped_lift(
        treatment.converted, control.converted, treatment.pre_orders, control.pre_orders
    )
    cuped_rev = stats.cuped_lift(
        treatment.revenue, control.revenue, treatment.pre_revenue, control.pre_revenue
    )
    # CUPED is used for the verdict when it is the more precise estimate
    use_cuped = (
        cuped_conv is not None
        and cuped_conv.estimate.relative_se is not None
        and conv.relative_se is not None
        and cuped_conv.estimate.relative_se < conv.relative_se
    )
    decision = cuped_conv.estimate if use_cuped and cuped_conv is not None else conv
    base = {
        "experiment_id": exp["experiment_id"],
        "segment": segment,
        "srm_p_value": _finite(srm),
        "srm_warning": srm_fail,
        "control_share": share,
        "window_days": int(exp["window_days"]),
        "as_of_date": as_of,
    }
    rows = []
    for variant in VARIANTS:
        arm = arms[variant]
        row = dict.fromkeys(COLUMN_NAMES)
        row.update(base)
        conversions = int(arm.converted.sum())
        row.update(
            variant=variant,
            customers=arm.n,
            conversions=conversions,
            conversion_rate=conversions / arm.n if arm.n else None,
            revenue_per_customer=float(arm.revenue.mean()) if arm.n else None,
            customers_pending=int(pending.get(variant, 0)),
        )
        if variant == "treatment":
            row.update(
                lift=conv.lift,
                lift_ci_low=conv.ci_low,
                lift_ci_high=conv.ci_high,
                p_value=conv.p_value,
                decision_basis="cuped" if use_cuped else "unadjusted",
                revenue_lift=rev.lift,
                revenue_lift_ci_low=rev.ci_low,
                revenue_lift_ci_high=rev.ci_high,
                revenue_p_value=rev.p_value,
            )
            if cuped_conv is not None:
                row.update(
                    cuped_lift=cuped_conv.estimate.lift,
                    cuped_ci_low=cuped_conv.estimate.ci_low,
                    cuped_ci_high=cuped_conv.estimate.ci_high,
                    cuped_p_value=cuped_conv.estimate.p_value,
                    cuped_variance_reduction=cuped_conv.variance_reduction,
                )
            if cuped_rev is not None:
                row.update(
                    cuped_revenue_lift=cuped_rev.estimate.lift,
                    cuped_revenue_ci_low=cuped_rev.estimate.ci_low,
                    cuped_revenue_ci_high=cuped_rev.estimate.ci_high,
                )
        rows.append(row)
    return rows, decision


def _experiment_rows(
    exp: dict[str, Any],
    customers: list[tuple[Any, ...]],
    pending: dict[tuple[str, str], int],
    as_of: date,
) -> list[dict[str, Any]]:
    """All rows of one experiment: the 'all' slice first, then segments by name."""
    by_slice: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for segment, variant, *metrics in customers:
        for key in (ALL_SEGMENT, _segment_label(segment)):
            by_slice.setdefault(key, {"control": [], "treatment": []})[variant].append(
                (variant, *metrics)
            )
    for segment, _variant in pending:
        by_slice.setdefault(segment, {"control": [], "treatment": []})
    by_slice.setdefault(ALL_SEGMENT, {"control": [], "treatment": []})
    segments = [ALL_SEGMENT, *sorted(s for s in by_slice if s != ALL_SEGMENT)]

    slices: list[tuple[list[dict[str, Any]], stats.LiftEstimate | None]] = []
    for segment in segments:
        arms = {v: _arm(by_slice[segment][v]) for v in VARIANTS}
        if segment == ALL_SEGMENT:
            slice_pending = {
                v: sum(n for (_s, pv), n in pending.items() if pv == v) for v in VARIANTS
            }
        else:
            slice_pending = {v: pending.get((segment, v), 0) for v in VARIANTS}
        slices.append(_slice_rows(exp, segment, arms, slice_pending, as_of))

    # Serial gatekeeping: "all" is the one pre-specified comparison, tested at
    # alpha unadjusted; segments are Holm-adjusted among themselves and can only
    # be declared once "all" is (adjusted p = max(p_all, Holm p)). This keeps
    # the chance of any false claim per experiment at alpha, "all" included.
    p_all = slices[0][1].p_value if slices[0][1] is not None else None
    segment_ps = [d.p_value if d is not None else None for _rows, d in slices[1:]]
    adjusted = [p_all, *stats.gatekept_holm(p_all, segment_ps)]

    out: list[dict[str, Any]] = []
    for (rows, decision), p_adj in zip(slices, adjusted, strict=True):
        control, treatment = rows
        treatment["p_value_adjusted"] = p_adj
        verdict = _verdict(
            n_c=control["customers"],
            n_t=treatment["customers"],
            conversions=control["conversions"] + treatment["conversions"],
            pending=control["customers_pending"] + treatment["customers_pending"],
            decision=decision if decision is not None else stats.relative_lift([], []),
            p_adjusted=p_adj,
            srm_fail=bool(treatment["srm_warning"]),
            cuped=treatment["decision_basis"] == "cuped",
        )
        control["verdict"] = treatment["verdict"] = verdict
        out.extend(rows)
    return out


# --- the stage --------------------------------------------------------------------------
def _write(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    ddl = ", ".join(f"{name} {dtype}" for name, dtype in RESULT_COLUMNS)
    placeholders = ", ".join("?" for _ in RESULT_COLUMNS)
    con.execute("begin transaction")
    try:
        con.execute(f"create or replace table {RESULTS_TABLE} ({ddl})")
        if rows:
            con.executemany(
                f"insert into {RESULTS_TABLE} values ({placeholders})",
                [[_clean(row[name]) for name in COLUMN_NAMES] for row in rows],
            )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return _finite(float(value))
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def _read_experiments(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cur = con.execute(_EXPERIMENTS_SQL)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def compute_results(
    con: duckdb.DuckDBPyConnection, as_of: date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(experiment definitions, result rows) over the connection's warehouse; no writes."""
    if not (
        table_exists(con, "personalisation", "experiments")
        and table_exists(con, "personalisation", "experiment_assignments")
    ):
        return [], []
    experiments = _read_experiments(con)
    if not experiments:
        return [], []
    _check_inputs(con, experiments)
    has_assignments = bool(
        con.execute("select count(*) from personalisation.experiment_assignments").fetchone()[0]
    )
    if has_assignments and not table_exists(con, "marts", "fct_orders"):
        raise ExperimentDataError("marts.fct_orders is missing: run dbt_build before measuring")
    customers: dict[str, list[tuple[Any, ...]]] = {}
    pending: dict[str, dict[tuple[str, str], int]] = {}
    if has_assignments:
        for eid, segment, variant, _cid, n_orders, revenue, pre_n, pre_rev in con.execute(
            _CUSTOMERS_SQL, [as_of]
        ).fetchall():
            customers.setdefault(eid, []).append(
                (segment, variant, n_orders, revenue, pre_n, pre_rev)
            )
        for eid, segment, variant, n in con.execute(_PENDING_SQL, [as_of]).fetchall():
            pending.setdefault(eid, {})[(_segment_label(segment), variant)] = int(n)
    rows: list[dict[str, Any]] = []
    for exp in experiments:
        eid = exp["experiment_id"]
        rows.extend(_experiment_rows(exp, customers.get(eid, []), pending.get(eid, {}), as_of))
    return experiments, rows


def measure(*, run_id: str, as_of: str, settings: Settings | None = None) -> MeasureResult:
    """Recompute ``personalisation.experiment_results`` as of ``as_of`` and write the page."""
    from segment_warehouse.experiments.report import write_report

    settings = settings or get_settings()
    try:
        as_of_date = date.fromisoformat(as_of)
    except (TypeError, ValueError) as exc:
        raise ExperimentDataError(f"as_of must be a date 'YYYY-MM-DD', got {as_of!r}") from exc
    with warehouse(settings=settings) as con:
        ensure_schemas(con)
        experiments, rows = compute_results(con, as_of_date)
        _write(con, rows)
    report = write_report(experiments, rows, as_of=as_of, settings=settings)
    all_rows = [r for r in rows if r["segment"] == ALL_SEGMENT]
    srm = sorted({f"{r['experiment_id']}/{r['segment']}" for r in rows if r["srm_warning"]})
    effects = [
        f"{r['experiment_id']}/{r['segment']}: {r['verdict']}"
        for r in rows
        if r["variant"] == "treatment"
        and ("treatment better" in r["verdict"] or "treatment worse" in r["verdict"])
    ]
    for item in srm:
        log.warning("sample ratio mismatch in %s", item)
    return MeasureResult(
        run_id=run_id,
        as_of=as_of,
        experiments=len(experiments),
        result_rows=len(rows),
        customers_measured=sum(int(r["customers"]) for r in all_rows),
        customers_pending=sum(int(r["customers_pending"]) for r in all_rows),
        srm_warnings=srm,
        effects=effects,
        report_path=str(report) if report else None,
    )
