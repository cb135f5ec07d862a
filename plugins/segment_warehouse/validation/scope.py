"""What a validation run covers: every row (full) or the new and changed ones (delta).

Issue #8's decision, carried out by #20: row-level expectations may run on the
rows that are new or changed in this run, provided the table-level invariants
run in SQL on the full tables every run (``table`` batches always do) and a
full row-level validation runs at least every
``SEGMENTS_VALIDATION_FULL_EVERY_DAYS`` days and after backfills and erasures.

A suite is validated in full when:

- it was never validated in full (first run);
- its last full validation is older than the setting (0: every run);
- a full validation was requested after it (``state.request_full_validation``:
  every dbt ``--full-refresh``, i.e. backfills, erasures and changed seeds, or an
  operator);
- its fingerprint changed: the suite file or the dbt project that builds the
  tables (a new rule has not seen the old rows; a model change can rewrite rows
  of append-only tables without a new load time);
- the caller asks for it (``validate_layer(..., full=True)``).

Otherwise it is a delta run. "New or changed" per ``rows`` batch:

- ``{"delta": {"loaded_at": col}}`` (append-only staging and audit tables): rows
  whose load time is after the newest load time of the last successful
  validation (``validation_watermarks:<suite>`` in ``audit.pipeline_state``);
- otherwise (tables dbt or the segment DAG rebuild whole): rows whose digest -
  DuckDB ``hash`` of every column the batch selects, joined columns included, so a
  decision whose customer withdrew consent counts as changed - is not among the
  digests recorded by the last successful validation (``audit.validation_digests``,
  kept beside the data it describes).

Baselines move only when a validation call ends without a critical failure:
rows that failed stay in the next run's delta until they are fixed. Pipeline
state (last full validation, watermarks, requests) lives in
``audit.pipeline_state`` (``state.py``); the digests are data and live in audit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from segment_warehouse import state
from segment_warehouse.config import Settings
from segment_warehouse.validation.suites import SuiteSpec

# Part of every fingerprint: a change in how digests or scopes are computed
# makes the next run full.
SCOPE_VERSION = "1"
DIGESTS_TABLE = "audit.validation_digests"
DIGESTS_DDL = f"""
    create table if not exists {DIGESTS_TABLE} (
        suite varchar not null,
        batch_name varchar not null,
        digest ubigint not null        -- hash() of one validated row, as the batch selects it
    )
"""
# Parts of the dbt project whose change can rewrite rows that are already validated.
DBT_INPUTS: tuple[str, ...] = ("dbt_project.yml", "models", "macros", "seeds")


@dataclass(frozen=True)
class RunScope:
    """The scope of one suite in one validation call."""

    full: bool
    reason: str  # plain language, shown in the report
    fingerprint: str
    last_full_at: datetime | None = None

    @property
    def mode(self) -> str:
        return "full" if self.full else "delta"


def suite_fingerprint(suite: SuiteSpec, settings: Settings, engine: str = "duckdb") -> str:
    """Suite file, dbt project and (when not DuckDB) the engine the rows batches run on.

    The engine is a part because the row digests of a delta are engine-specific
    (DuckDB ``hash()``, Spark ``xxhash64``); left out for DuckDB so existing
    fingerprints stay valid."""
    from segment_warehouse.tasks import dbt_project_digest  # the one project hasher

    digest = hashlib.sha256(SCOPE_VERSION.encode())
    digest.update(suite.path.read_bytes())
    digest.update(dbt_project_digest(DBT_INPUTS, settings=settings).encode())
    if engine != "duckdb":
        digest.update(f"engine={engine}".encode())
    return digest.hexdigest()


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def decide_scope(
    con: duckdb.DuckDBPyConnection,
    suite: SuiteSpec,
    settings: Settings,
    *,
    now: datetime,
    full_requested: bool = False,
    engine: str = "duckdb",
) -> RunScope:
    """Full or delta for ``suite`` now, and why (see the module docstring).

    ``engine``: where its rows batches run (``spark`` when some run on Spark
    DataFrames, ``validation/spark_batches.py``)."""
    fingerprint = suite_fingerprint(suite, settings, engine)
    every = settings.validation_full_every_days
    last = state.last_full_validation(con, suite.name)
    last_at = last[0] if last else None

    def full(reason: str) -> RunScope:
        return RunScope(True, f"full: {reason}", fingerprint, last_at)

    if full_requested:
        return full("requested for this run")
    if last is None:
        return full("first validation of this suite")
    last_at, last_fingerprint = last
    if every == 0:
        return full("SEGMENTS_VALIDATION_FULL_EVERY_DAYS=0 (every run)")
    if now - last_at >= timedelta(days=every):
        return full(f"the last full validation ({_when(last_at)}) is {every}+ days old")
    pending = [why for when, why in state.full_validation_requests(con) if when > last_at]
    if pending:
        return full("; ".join(dict.fromkeys(pending)))
    if fingerprint != last_fingerprint:
        return full(
            "the suite, the dbt project or the validation engine changed since the last "
            "full validation"
        )
    due = last_at + timedelta(days=every)
    return RunScope(
        False,
        f"delta: rows new or changed since the last successful validation "
        f"(last full validation {_when(last_at)}, next by {_when(due)})",
        fingerprint,
        last_at,
    )


def ensure_digests_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists audit")
    con.execute(DIGESTS_DDL)


__all__ = [
    "DIGESTS_TABLE",
    "RunScope",
    "decide_scope",
    "ensure_digests_table",
    "suite_fingerprint",
]
