"""Pipeline state: the one owner of what one stage leaves for a later one.

State lives in ``audit.pipeline_state`` in the working warehouse, one row per
key (``key``, ``value``, ``updated_at``, ``run_id``), so it is written in the
same DuckDB transaction as the data it describes when the caller passes its
own connection (as dlt keeps its pipeline state beside the loaded data), it
goes wherever the warehouse goes (backups, copies), and a crash leaves data
and state consistent. Before this module the same facts were loose files in
the warehouse dir; :func:`import_legacy_files` moves them in once.

Keys:

- ``dbt_full_refresh_required``: newline-separated reasons the next dbt build
  must be a ``--full-refresh`` (an erasure ran); cleared by a successful build.
- ``dbt_last_as_of_date``: the as-of date of the last successful dbt build.
- ``dbt_seeds_sha256``: hash of the seeds that build used (a change re-prices
  old orders, so it forces a full refresh).
- ``dbt_last_build``: JSON ``{"fingerprint", "parts", "marts_generation",
  "run_id", "at"}`` of the last successful dbt build: the digest of everything
  it read (``tasks.dbt_inputs_fingerprint``) and the marts generation it left. A
  build with the same fingerprint over the same generation is skipped
  (SEGMENTS_DBT_SKIP_UNCHANGED); removed when a build starts, so a failed or
  interrupted one leaves none.
- ``marts_generation``: a token every writer of marts renews before it starts;
  a snapshot built from another token is not current (see ``publish``).
- ``segments_marts_generation``: the marts generation the current segments,
  predictions and decisions were computed from (written by the recluster DAG);
  a snapshot whose marts are newer marks them stale (``segments_current``).
- ``validation_full_requested``: JSON list of ``[requested_at, reason]`` (newest
  last): a full row-level validation is due for every suite whose last full one
  is older (a dbt full refresh: backfill, erasure, changed seeds; or an operator).
- ``validation_full:<suite>``: JSON ``{"at", "fingerprint", "run_id"}`` of the
  suite's last successful full validation (``validation/scope.py``).
- ``validation_watermarks:<suite>``: JSON ``{batch: load time}``, the newest
  ``_loaded_at`` each append-only batch had when it last validated successfully.

Two levels: functions taking a connection (``get``, ``put``, ...) join the
caller's transaction; ``read``/``write`` open and close their own connection
(stages run one at a time, see ``warehouse``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from segment_warehouse.config import Settings, get_settings

FULL_REFRESH_REQUIRED = "dbt_full_refresh_required"
DBT_LAST_AS_OF_DATE = "dbt_last_as_of_date"
DBT_SEEDS_SHA256 = "dbt_seeds_sha256"
DBT_LAST_BUILD = "dbt_last_build"
MARTS_GENERATION = "marts_generation"
SEGMENTS_MARTS_GENERATION = "segments_marts_generation"
KEYS: tuple[str, ...] = (
    FULL_REFRESH_REQUIRED,
    DBT_LAST_AS_OF_DATE,
    DBT_SEEDS_SHA256,
    MARTS_GENERATION,
)

STATE_DDL = """
    create table if not exists audit.pipeline_state (
        key varchar primary key,
        value varchar not null,
        updated_at timestamptz not null,
        run_id varchar                     -- the run that wrote it (null: outside a run)
    )
"""

VALIDATION_FULL_REQUESTED = "validation_full_requested"
VALIDATION_FULL_PREFIX = "validation_full:"
VALIDATION_WATERMARKS_PREFIX = "validation_watermarks:"
KEEP_FULL_VALIDATION_REQUESTS = 20

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def ensure_state_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``audit.pipeline_state`` if missing (idempotent)."""
    con.execute("create schema if not exists audit")
    con.execute(STATE_DDL)


def _has_table(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'audit' and table_name = 'pipeline_state'"
    ).fetchone()
    return bool(row and row[0])


def get(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """The value of ``key``, None when unset (or the table does not exist yet)."""
    if not _has_table(con):
        return None
    row = con.execute("select value from audit.pipeline_state where key = ?", [key]).fetchone()
    return row[0] if row else None


def put(con: duckdb.DuckDBPyConnection, key: str, value: str, *, run_id: str | None = None) -> None:
    """Set ``key`` (upsert) in the caller's transaction, if one is open."""
    ensure_state_table(con)
    con.execute(
        """
        insert into audit.pipeline_state (key, value, updated_at, run_id)
        values (?, ?, ?, ?)
        on conflict (key) do update
            set value = excluded.value, updated_at = excluded.updated_at, run_id = excluded.run_id
        """,
        [key, value, datetime.now(UTC), run_id],
    )


def delete(con: duckdb.DuckDBPyConnection, key: str) -> None:
    if _has_table(con):
        con.execute("delete from audit.pipeline_state where key = ?", [key])


def renew_marts_generation(con: duckdb.DuckDBPyConnection, *, run_id: str | None = None) -> str:
    """Call before modifying marts: snapshots built earlier stop counting as current."""
    token = uuid.uuid4().hex
    put(con, MARTS_GENERATION, token, run_id=run_id)
    return token


def last_dbt_build(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """What the last successful dbt build recorded (``dbt_last_build``), None if none."""
    raw = get(con, DBT_LAST_BUILD)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None  # unreadable: as if there were none, the next build rewrites it
    return doc if isinstance(doc, dict) and doc.get("fingerprint") else None


def record_dbt_build(
    con: duckdb.DuckDBPyConnection,
    fingerprint: str,
    parts: dict[str, str],
    *,
    run_id: str | None = None,
    at: datetime | None = None,
) -> None:
    """Record a successful dbt build's input fingerprint, with the marts generation it
    left (the caller's transaction, with the rest of the build's state)."""
    doc = {
        "fingerprint": fingerprint,
        "parts": dict(sorted(parts.items())),
        "marts_generation": get(con, MARTS_GENERATION),
        "run_id": run_id,
        "at": (at or datetime.now(UTC)).isoformat(),
    }
    put(con, DBT_LAST_BUILD, json.dumps(doc), run_id=run_id)


def request_full_refresh(
    con: duckdb.DuckDBPyConnection, reason: str, *, run_id: str | None = None
) -> None:
    """Add a reason for the next dbt build to be a --full-refresh (kept until one succeeds)."""
    reasons = full_refresh_reasons(con)
    reason = " ".join(reason.split())  # one line per reason
    if reason and reason not in reasons:
        reasons.append(reason)
    put(con, FULL_REFRESH_REQUIRED, "\n".join(reasons), run_id=run_id)


def full_refresh_reasons(con: duckdb.DuckDBPyConnection) -> list[str]:
    value = get(con, FULL_REFRESH_REQUIRED) or ""
    return [line for line in value.split("\n") if line.strip()]


def request_full_validation(
    con: duckdb.DuckDBPyConnection,
    reason: str,
    *,
    run_id: str | None = None,
    at: datetime | None = None,
) -> None:
    """Make the next validation of every suite a full one (all rows, every row rule).

    Kept as a dated request, not a flag: each suite compares it with its own last
    full validation, so both DAGs' suites honour it without one clearing it for
    the other."""
    reason = " ".join(reason.split())
    entries = full_validation_requests(con)
    entries.append(((at or datetime.now(UTC)), reason or "requested"))
    value = [[when.isoformat(), why] for when, why in entries[-KEEP_FULL_VALIDATION_REQUESTS:]]
    put(con, VALIDATION_FULL_REQUESTED, json.dumps(value), run_id=run_id)


def full_validation_requests(con: duckdb.DuckDBPyConnection) -> list[tuple[datetime, str]]:
    """Every recorded request for a full validation, oldest first."""
    raw = get(con, VALIDATION_FULL_REQUESTED)
    if not raw:
        return []
    return [(datetime.fromisoformat(when), str(why)) for when, why in json.loads(raw)]


def last_full_validation(con: duckdb.DuckDBPyConnection, suite: str) -> tuple[datetime, str] | None:
    """(when, suite fingerprint) of ``suite``'s last successful full validation."""
    raw = get(con, VALIDATION_FULL_PREFIX + suite)
    if not raw:
        return None
    doc = json.loads(raw)
    return datetime.fromisoformat(doc["at"]), str(doc.get("fingerprint") or "")


def record_full_validation(
    con: duckdb.DuckDBPyConnection,
    suite: str,
    at: datetime,
    fingerprint: str,
    *,
    run_id: str | None = None,
) -> None:
    doc = {"at": at.isoformat(), "fingerprint": fingerprint, "run_id": run_id}
    put(con, VALIDATION_FULL_PREFIX + suite, json.dumps(doc), run_id=run_id)


def validation_watermarks(con: duckdb.DuckDBPyConnection, suite: str) -> dict[str, datetime]:
    """Batch -> newest load time validated (append-only batches of ``suite``)."""
    raw = get(con, VALIDATION_WATERMARKS_PREFIX + suite)
    if not raw:
        return {}
    return {batch: datetime.fromisoformat(at) for batch, at in json.loads(raw).items()}


def put_validation_watermarks(
    con: duckdb.DuckDBPyConnection,
    suite: str,
    watermarks: dict[str, datetime],
    *,
    run_id: str | None = None,
) -> None:
    value = {batch: at.isoformat() for batch, at in sorted(watermarks.items())}
    put(con, VALIDATION_WATERMARKS_PREFIX + suite, json.dumps(value), run_id=run_id)


def import_legacy_files(con: duckdb.DuckDBPyConnection, warehouse_dir: Path) -> list[str]:
    """Move state files of older versions (``<warehouse_dir>/<key>``) into the table.

    A key already in the table wins (it is newer); the file is removed either
    way, so no two owners remain. Returns the keys imported.
    """
    files = {key: warehouse_dir / key for key in KEYS if (warehouse_dir / key).is_file()}
    if not files:
        return []
    imported = []
    for key, path in files.items():
        value = path.read_text().strip()
        if key == FULL_REFRESH_REQUIRED:
            for reason in value.split("\n"):
                if reason.strip():
                    request_full_refresh(con, reason)
            imported.append(key)
        elif value and get(con, key) is None:
            put(con, key, value)
            imported.append(key)
    for path in files.values():
        path.unlink()
    return imported


@contextmanager
def connection(
    settings: Settings | None = None, *, create: bool = True
) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """A connection to the warehouse for state alone; None if it does not exist and not
    ``create``. Legacy state files are imported on the way."""
    from segment_warehouse.warehouse import warehouse

    settings = settings or get_settings()
    if not create and not settings.warehouse_db.exists():
        yield None
        return
    with warehouse(settings=settings) as con:
        if any((settings.warehouse_dir / key).is_file() for key in KEYS):
            ensure_state_table(con)
            import_legacy_files(con, settings.warehouse_dir)
        yield con


def read(key: str, *, settings: Settings | None = None) -> str | None:
    """``get`` on its own connection (does not create the warehouse)."""
    with connection(settings, create=False) as con:
        return None if con is None else get(con, key)


def write(
    key: str, value: str, *, run_id: str | None = None, settings: Settings | None = None
) -> None:
    """``put`` on its own connection."""
    with connection(settings) as con:
        assert con is not None
        put(con, key, value, run_id=run_id)


def _checked_date(value: str, what: str) -> str:
    value = value.strip()
    try:
        if _DATE.fullmatch(value):
            date.fromisoformat(value)  # a real calendar date
            return value
    except ValueError:
        pass
    raise ValueError(f"{what} must be a date YYYY-MM-DD, got {value!r}")


def resolve_as_of_date(
    ds: str | None,
    *,
    event_times: Iterable[datetime] = (),
    settings: Settings | None = None,
    today: date | None = None,
) -> str:
    """The as-of date of a run.

    - ``ds`` when Airflow gives one (scheduled, manual with a logical date, backfill).
    - Asset-triggered by landing deliveries (``event_times``: the triggering asset
      events' timestamps, no ``ds`` in Airflow 3): the UTC date of the newest event,
      but never before the last build's as-of date. The delivered data is known as of
      that moment, so recency and lifecycle count from it (an intraday file's orders
      are not "after the as-of date"); a file of old data (a late backfill file) does
      not move the date back, which would also force a full refresh; backdating is
      what ``make run DATE=`` / ``airflow backfill`` are for.
    - Otherwise (e.g. runs triggered by the profiles Asset): the as-of date of the
      last successful dbt build recorded in the warehouse, else today (UTC). Those
      runs read the warehouse that build made (after a backfill, an older one).
    """
    if ds:
        return _checked_date(ds, "ds")
    stored = read(DBT_LAST_AS_OF_DATE, settings=settings)
    if stored:
        stored = _checked_date(stored, f"audit.pipeline_state {DBT_LAST_AS_OF_DATE}")
    times = list(event_times)
    if times:
        # a naive timestamp is UTC (Airflow's are aware)
        newest = max(t if t.tzinfo else t.replace(tzinfo=UTC) for t in times)
        event_day = newest.astimezone(UTC).date().isoformat()
        return max(event_day, stored) if stored else event_day
    if stored:
        return stored
    return (today or datetime.now(UTC).date()).isoformat()
