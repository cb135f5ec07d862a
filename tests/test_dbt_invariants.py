"""dbt checks that must be able to stop a build, and the incremental watermarks.

One warehouse, built twice from the hand-made raw fixture: first with the raw
order and event tables present but empty (a first run before any order or
event file), then incrementally after they arrive, with a late refund that
has no ``updated_at``. Then invariants are broken on purpose: the build must
fail, which is what makes ``make test`` (and CI) fail on a broken invariant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from test_dbt_models import (
    AS_OF,
    FIXTURES,
    _create_raw_tables,
    _csv_rows,
    _event_rows,
    _insert,
)

from segment_warehouse.config import get_settings
from segment_warehouse.dbt_runner import DbtBuildError, DbtRunResult, run_dbt

# The data tests that stay warnings (dbt_project.yml says why); every other
# data test is an error.
EXPECTED_WARNINGS = {
    "source_not_null_crm_crm_contacts_contact_id",
    "source_not_null_crm_crm_contacts_updated_at",
    "source_not_null_transactions_transactions_orders_order_id",
    "source_not_null_transactions_transactions_orders_order_ts",
    "source_not_null_analytics_analytics_events_message_id",
    "source_not_null_analytics_analytics_events_timestamp",
    "not_null_stg_transactions__orders_fx_rate_to_reporting",
    "not_null_stg_transactions__orders_total_amount_reporting",
    "not_null_stg_transactions__orders_discount_amount_reporting",
    "not_null_fct_orders_total_amount_reporting",
}

# A refund delivered in a later file without updated_at (optional column): by
# the landing contract the later file wins, although the earlier version has
# the later updated_at.
LATE_REFUND = [
    {
        "order_id": "O9", "contact_id": "C001", "email": "alice@example.com",
        "order_ts": "2024-06-24T10:00:00Z", "status": "completed", "currency": "USD",
        "total_amount": "70.00", "discount_amount": "0", "items_count": "1", "channel": "web",
        "updated_at": "2024-06-24T12:00:00Z",
        "_source_file": "transactions/orders_2024-06-24.csv", "_line_number": 2,
    },
    {
        "order_id": "O9", "contact_id": "C001", "email": "alice@example.com",
        "order_ts": "2024-06-24T10:00:00Z", "status": "refunded", "currency": "USD",
        "total_amount": "70.00", "discount_amount": "0", "items_count": "1", "channel": "web",
        "updated_at": None,
        "_source_file": "transactions/orders_2024-06-26.csv", "_line_number": 2,
    },
]  # fmt: skip


@dataclass
class Builds:
    db: Path
    target: Path
    first: DbtRunResult
    second: DbtRunResult


def _build(*extra: str, check: bool = False) -> DbtRunResult:
    return run_dbt(
        ["build", *extra], vars={"as_of_date": AS_OF, "reporting_currency": "USD"}, check=check
    )


def _query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _load(db: Path, batch_id: str, loaded_at: datetime, tables: dict[str, list[dict]]) -> None:
    con = duckdb.connect(str(db))
    try:
        _create_raw_tables(con)
        for table, rows in tables.items():
            for row in rows:
                row["_loaded_at"], row["_batch_id"] = loaded_at, batch_id
            _insert(con, table, rows)
    finally:
        con.close()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    root = tmp_path_factory.mktemp("dbt_invariants")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / "warehouse"))
    mp.setenv("SEGMENTS_REPORTS_DIR", str(root / "reports"))
    mp.setenv("SEGMENTS_PII_KEY", "test-key-not-secret")
    mp.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    settings = get_settings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    db = settings.warehouse_db
    # contacts only: the order and event tables exist but are empty
    _load(db, "b1", datetime(2024, 6, 29, 23, 0, tzinfo=UTC),
          {"crm_contacts": _csv_rows(FIXTURES / "crm_contacts.csv")})  # fmt: skip
    first = _build()
    _load(
        db,
        "b2",
        datetime(2024, 6, 30, 23, 0, tzinfo=UTC),
        {
            "transactions_orders": _csv_rows(FIXTURES / "transactions_orders.csv")
            + [dict(r) for r in LATE_REFUND],
            "analytics_events": _event_rows(FIXTURES / "analytics_events.jsonl"),
        },
    )
    second = _build()
    yield Builds(db=db, target=settings.dbt_target_dir, first=first, second=second)
    mp.undo()


def _status(result: DbtRunResult, name: str) -> str:
    (status,) = [n.status for n in result.nodes if n.name.split(".")[0] == name]
    return status


def test_incremental_tables_empty_at_first_fill_up_later(builds: Builds) -> None:
    assert builds.first.success, builds.first.summary()
    counts = dict(
        _query(
            builds.db,
            """
            select 'orders', count(*) from intermediate.int_orders_deduplicated
            union all select 'staged_orders', count(distinct order_id)
                from staging.stg_transactions__orders
            union all select 'devices', count(*) from intermediate.int_anonymous_ids_classified
            union all select 'staged_devices', count(distinct anonymous_id)
                from staging.stg_analytics__events where anonymous_id is not null
            """,
        )
    )
    assert counts["staged_orders"] > 0 and counts["staged_devices"] > 0
    assert counts["orders"] == counts["staged_orders"]
    assert counts["devices"] == counts["staged_devices"]


def test_revenue_reconciliation_agrees_with_the_model_on_a_late_refund(builds: Builds) -> None:
    # the model: the later file wins, so O9 is a refund and earns nothing
    assert _query(builds.db, "select status from marts.fct_orders where order_id = 'O9'") == [
        ("refunded",)
    ]
    assert _status(builds.second, "assert_completed_revenue_reconciles_with_staging") == "pass"


def test_invariants_are_errors_and_the_documented_few_warn(builds: Builds) -> None:
    import json

    manifest = json.loads((builds.target / "manifest.json").read_text())
    severities = {
        node["name"]: node["config"]["severity"].lower()
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test"
    }
    assert severities.keys() >= EXPECTED_WARNINGS  # a renamed test must be re-decided
    assert {name for name, sev in severities.items() if sev == "warn"} == EXPECTED_WARNINGS
    assert severities["assert_no_bot_or_shared_device_in_identity_map"] == "error"
    assert builds.second.success, builds.second.summary()


def test_a_broken_invariant_fails_the_build(builds: Builds) -> None:
    con = duckdb.connect(str(builds.db))
    try:
        # an order twice in the incremental table: no new load re-ranks it
        con.execute(
            "insert into intermediate.int_orders_deduplicated "
            "select * from intermediate.int_orders_deduplicated where order_id = 'O1'"
        )
    finally:
        con.close()
    with pytest.raises(DbtBuildError) as raised:
        _build("--select", "int_orders_deduplicated", check=True)
    failed = {n.name.split(".")[0] for n in raised.value.failures}
    assert "unique_int_orders_deduplicated_order_id" in failed


def test_a_bot_in_the_identity_map_fails_the_checks(builds: Builds) -> None:
    con = duckdb.connect(str(builds.db))
    try:
        (bot,) = con.execute(
            "select anonymous_id from intermediate.int_anonymous_ids_classified "
            "where is_bot limit 1"
        ).fetchone()
        con.execute(
            "insert into marts.identity_map (source, source_id, customer_id) "
            "select 'analytics', ?, customer_id from marts.identity_map limit 1",
            [bot],
        )
    finally:
        con.close()
    with pytest.raises(DbtBuildError) as raised:
        run_dbt(
            ["test", "--select", "assert_no_bot_or_shared_device_in_identity_map"],
            vars={"as_of_date": AS_OF, "reporting_currency": "USD"},
        )
    failed = {n.name.split(".")[0] for n in raised.value.failures}
    assert failed == {"assert_no_bot_or_shared_device_in_identity_map"}
