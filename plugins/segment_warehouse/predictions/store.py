"""segments.customer_predictions / segments.prediction_runs: DDL and the one-transaction write."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

from segment_warehouse.warehouse import table_columns

DDL: tuple[str, ...] = (
    """
    create table if not exists segments.customer_predictions (
        customer_id varchar not null,
        purchase_probability_30d double not null,  -- P(>= 1 completed order in (as_of, as_of+30])
        churn_probability double,          -- buyers: P(no completed order in the churn window)
        expected_revenue_30d double,       -- purchase probability x order value
        purchase_decile integer,           -- 1 = the 10 % most likely to buy
        churn_decile integer,              -- 1 = the 10 % most likely to churn (buyers)
        is_buyer boolean not null,         -- at least one completed order by as_of
        model_version varchar not null,
        as_of_date date not null,
        scored_at timestamptz not null
    )
    """,
    """
    create table if not exists segments.prediction_runs (
        model_version varchar not null,
        run_id varchar not null,
        trained_at timestamptz not null,
        as_of_date date not null,
        horizon_days integer not null,        -- purchase label window (30)
        churn_window_days integer not null,   -- churn label window N
        purchase_method varchar not null,  -- gradient_boosting|calibrated_baseline|rate_heuristic
        churn_method varchar not null,
        training_cutoffs json not null,       -- {purchase: [dates], churn: [dates]}
        label_windows json not null,          -- {purchase: [[from, to]], churn: [[from, to]]}
        rows_trained bigint not null,         -- purchase model rows (customers x cut-offs)
        churn_rows_trained bigint not null,
        backtest_cutoff date,                 -- purchase backtest cut-off (null: none)
        backtest_kind varchar,                -- time_split | customer_holdout | null
        roc_auc double,                       -- purchase, model, on the backtest
        pr_auc double,
        brier_score double,
        lift_top_decile double,
        baseline_roc_auc double,              -- purchase, RFM baseline, same rows
        baseline_pr_auc double,
        baseline_brier_score double,
        baseline_lift_top_decile double,
        churn_roc_auc double,
        churn_brier_score double,
        churn_baseline_roc_auc double,
        churn_baseline_brier_score double,
        beats_baseline boolean,               -- purchase model beat the baseline (null: untested)
        churn_beats_baseline boolean,
        verdict varchar not null,             -- plain language, both targets
        backtest json not null,               -- full backtest: curves, importances, both targets
        features json not null,               -- [{name, description}]
        n_scored bigint not null,
        n_excluded bigint not null,           -- marketing_consent = false: not scored
        mean_purchase_probability double,
        model_path varchar,
        duration_seconds double,
        input_fingerprint varchar,            -- as-of date, settings and inputs it saw
        calibration json,                     -- per target: method, cut-off, rows, mapping
        run_kind varchar,                     -- train: fitted, backtested and scored here;
                                              -- score: scored with a saved model
        fitted_model_version varchar,         -- the training run whose model scored
        scored_at timestamptz                 -- when this run scored (trained_at: the model)
    )
    """,
)


def ensure_prediction_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in DDL:
        con.execute(ddl)
    # tables of earlier versions
    for column, kind in (
        ("input_fingerprint", "varchar"),
        ("calibration", "json"),
        ("run_kind", "varchar"),
        ("fitted_model_version", "varchar"),
        ("scored_at", "timestamptz"),
    ):
        con.execute(
            f"alter table segments.prediction_runs add column if not exists {column} {kind}"
        )
    # rows of earlier versions were all training runs that scored when they trained
    con.execute(
        "update segments.prediction_runs set run_kind = 'train', "
        "fitted_model_version = model_version, scored_at = trained_at where run_kind is null"
    )


# The newest run is the one that scored last; a training run and the score-only
# runs after it share its trained_at.
LATEST_FIRST = "order by scored_at desc, trained_at desc"


# The json columns of prediction_runs: DuckDB returns them as text.
JSON_COLUMNS = frozenset(
    {"training_cutoffs", "label_windows", "backtest", "features", "calibration"}
)


def _first(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> dict[str, Any] | None:
    """The first row of a prediction_runs query, its json columns decoded."""
    cur = con.execute(sql, params or [])
    rows = cur.fetchall()
    if not rows:
        return None
    run = dict(zip([d[0] for d in cur.description], rows[0], strict=True))
    for key in JSON_COLUMNS & run.keys():
        if isinstance(run[key], str):
            run[key] = json.loads(run[key])
    return run


def latest_run(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    if "scored_at" not in table_columns(con, "segments", "prediction_runs"):
        # a table of an earlier version, before its next prediction run adds the column
        return _first(
            con, "select * from segments.prediction_runs order by trained_at desc limit 1"
        )
    return _first(con, f"select * from segments.prediction_runs {LATEST_FIRST} limit 1")


def run_of_version(con: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any] | None:
    return _first(
        con, "select * from segments.prediction_runs where model_version = ?", [model_version]
    )


def latest_training_run(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    return _first(
        con,
        f"select * from segments.prediction_runs where run_kind = 'train' {LATEST_FIRST} limit 1",
    )


def write_predictions(
    con: duckdb.DuckDBPyConnection, scores: pd.DataFrame, run_row: dict[str, Any]
) -> None:
    """Replace the current predictions and append the run row, atomically."""
    cols = [
        "customer_id", "purchase_probability_30d", "churn_probability", "expected_revenue_30d",
        "purchase_decile", "churn_decile", "is_buyer", "model_version", "as_of_date", "scored_at",
    ]  # fmt: skip
    row = {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in run_row.items()}
    names = list(row)
    con.execute("begin transaction")
    try:
        con.register("_pred_scores", scores[cols])
        con.execute("delete from segments.customer_predictions")
        con.execute(
            f"insert into segments.customer_predictions ({', '.join(cols)}) "
            f"select {', '.join(cols)} from _pred_scores"
        )
        con.execute(
            f"insert into segments.prediction_runs ({', '.join(names)}) "
            f"values ({', '.join('?' for _ in names)})",
            [row[n] for n in names],
        )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    finally:
        con.unregister("_pred_scores")
