"""segments.* DDL, reading the previous run, and the single-transaction write."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from segment_warehouse.clustering.features import FEATURE_NAMES

DDL: tuple[str, ...] = (
    """
    create table if not exists segments.segment_runs (
        run_id varchar not null,
        created_at timestamptz not null,
        as_of_date date not null,
        algorithm varchar not null,
        k integer not null,
        silhouette double,              -- on the fixed-seed selection sample
        inertia double,                 -- all profiled customers, scaled space
        n_profiled bigint not null,
        n_excluded bigint not null,     -- marketing_consent = false
        ari_vs_previous double,         -- null on the first run
        changed_share double,           -- share of common customers whose segment changed
        features json not null,         -- [{name, transform, impute, center, scale, ...}]
        k_candidates json not null,     -- [{k, silhouette, inertia, chosen}]
        input_fingerprint varchar not null,
        model_path varchar not null
    )
    """,
    """
    create table if not exists segments.customer_segments (
        customer_id varchar not null,
        segment_id integer not null,
        segment_name varchar not null,
        run_id varchar not null
    )
    """,
    """
    create table if not exists segments.segment_membership_history (
        customer_id varchar not null,
        segment_id integer not null,
        segment_name varchar not null,  -- name when the membership opened
        run_id varchar not null,        -- run that opened the membership
        valid_from timestamptz not null,  -- segment_runs.created_at of that run
        valid_to timestamptz            -- null = current
    )
    """,
    """
    create table if not exists segments.segment_centroids (
        run_id varchar not null,
        segment_id integer not null,
        feature varchar not null,
        value double not null           -- scaled space of that run (see features JSON)
    )
    """,
)


@dataclass
class PreviousRun:
    run_id: str
    created_at: datetime
    k: int
    input_fingerprint: str
    features: list[dict[str, Any]]
    centroids: dict[int, dict[str, float]]  # segment_id -> feature -> scaled value
    max_segment_id: int


def first_row(cur: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """First row of a result, consuming it: DuckDB 2 refuses new statements on a
    connection while a result is only partly fetched (fetchone leaves it open)."""
    rows = cur.fetchall()
    return rows[0] if rows else None


def ensure_segment_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists segments")
    for ddl in DDL:
        con.execute(ddl)


def latest_run(con: duckdb.DuckDBPyConnection) -> PreviousRun | None:
    row: Any = con.execute(
        "select run_id, created_at, k, input_fingerprint, features from segments.segment_runs "
        "order by created_at desc, run_id desc limit 1"
    )
    row = first_row(row)
    if row is None:
        return None
    centroids: dict[int, dict[str, float]] = {}
    for sid, feature, value in con.execute(
        "select segment_id, feature, value from segments.segment_centroids where run_id = ?",
        [row[0]],
    ).fetchall():
        centroids.setdefault(int(sid), {})[feature] = float(value)
    # Never reuse a retired id: a new meaning must not inherit an old one's history.
    max_id = first_row(
        con.execute("select coalesce(max(segment_id), 0) from segments.segment_centroids")
    )
    return PreviousRun(
        run_id=row[0],
        created_at=row[1],
        k=int(row[2]),
        input_fingerprint=row[3],
        features=json.loads(row[4]),
        centroids=centroids,
        max_segment_id=int(max_id[0]) if max_id else 0,
    )


def run_exists(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    found = con.execute("select 1 from segments.segment_runs where run_id = ?", [run_id])
    return first_row(found) is not None


def run_row(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    cur = con.execute("select * from segments.segment_runs where run_id = ?", [run_id])
    cols = [c[0] for c in cur.description]
    row = first_row(cur)
    if row is None:
        raise KeyError(run_id)
    return dict(zip(cols, row, strict=True))


def previous_assignments(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        "select customer_id, segment_id from segments.customer_segments order by customer_id"
    ).df()


def previous_centroids_in_new_space(
    prev: PreviousRun, new_features: list[dict[str, Any]]
) -> dict[int, np.ndarray]:
    """Map last run's centroids into this run's scaled space.

    scaled_prev * scale_prev + center_prev gives the unscaled (log1p) value,
    which this run's scaler then re-scales. Empty if the feature sets differ
    (a new algorithm version): then every segment gets a fresh id.
    """
    old = {f["name"]: f for f in prev.features}
    if [f["name"] for f in new_features] != list(FEATURE_NAMES) or set(old) != set(FEATURE_NAMES):
        return {}
    out: dict[int, np.ndarray] = {}
    for sid, values in prev.centroids.items():
        if set(values) != set(FEATURE_NAMES):
            continue
        vec = []
        for f in new_features:
            o = old[f["name"]]
            unscaled = values[f["name"]] * o["scale"] + o["center"]
            vec.append((unscaled - f["center"]) / f["scale"])
        out[sid] = np.asarray(vec, dtype=np.float64)
    return out


def write_run(
    con: duckdb.DuckDBPyConnection,
    *,
    run: dict[str, Any],
    assignments: pd.DataFrame,
    summary: pd.DataFrame,
    centroids: pd.DataFrame,
) -> None:
    """Write every segments.* change of one run in ONE transaction.

    ``assignments``: customer_id, segment_id, segment_name (profiled customers).
    Readers (and a crash mid-way) see either the previous run or this one.
    """
    created_at: datetime = run["created_at"]
    run_id: str = run["run_id"]
    con.execute("begin transaction")
    try:
        con.register("_new_assign", assignments)
        con.register("_new_summary", summary)
        con.register("_new_centroids", centroids)
        con.execute(
            """
            insert into segments.segment_runs
            (run_id, created_at, as_of_date, algorithm, k, silhouette, inertia, n_profiled,
             n_excluded, ari_vs_previous, changed_share, features, k_candidates,
             input_fingerprint, model_path)
            values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                run_id,
                created_at,
                run["as_of_date"],
                run["algorithm"],
                run["k"],
                run["silhouette"],
                run["inertia"],
                run["n_profiled"],
                run["n_excluded"],
                run["ari_vs_previous"],
                run["changed_share"],
                json.dumps(run["features"]),
                json.dumps(run["k_candidates"]),
                run["input_fingerprint"],
                run["model_path"],
            ],
        )
        # History: close memberships whose segment changed or whose customer
        # dropped out (e.g. consent withdrawn), then open rows for the rest.
        con.execute(
            """
            update segments.segment_membership_history as h
            set valid_to = ?
            where h.valid_to is null
              and not exists (
                select 1 from _new_assign n
                where n.customer_id = h.customer_id and n.segment_id = h.segment_id)
            """,
            [created_at],
        )
        con.execute(
            """
            insert into segments.segment_membership_history
            select n.customer_id, n.segment_id, n.segment_name, ?, ?, null
            from _new_assign n
            anti join (select customer_id from segments.segment_membership_history
                       where valid_to is null) o using (customer_id)
            order by n.customer_id
            """,
            [run_id, created_at],
        )
        # Current-only tables are replaced wholesale (cheaper than a 1 M-row delete).
        con.execute(
            """
            create or replace table segments.customer_segments as
            select customer_id::varchar as customer_id, segment_id::integer as segment_id,
                   segment_name::varchar as segment_name, ?::varchar as run_id
            from _new_assign order by customer_id
            """,
            [run_id],
        )
        mean_cols = ", ".join(f"mean_{f}::double as mean_{f}" for f in FEATURE_NAMES)
        con.execute(
            f"""
            create or replace table segments.segment_summary as
            select ?::varchar as run_id, segment_id::integer as segment_id,
                   segment_name::varchar as segment_name, size::bigint as size,
                   share::double as share, {mean_cols}, traits::varchar as traits
            from _new_summary order by segment_id
            """,
            [run_id],
        )
        con.execute(
            """
            insert into segments.segment_centroids
            select ?, segment_id::integer, feature, value::double from _new_centroids
            order by segment_id, feature
            """,
            [run_id],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        for view in ("_new_assign", "_new_summary", "_new_centroids"):
            con.unregister(view)
