"""dbt project end to end on a small hand-made raw fixture.

Builds a temporary warehouse (SEGMENTS_WAREHOUSE_DIR=tmp_path), writes the
raw tables ingest.py would write from ``tests/fixtures/raw``, runs
``dbt build`` (models + data tests + unit tests) through ``dbt_runner`` and
checks the identity-resolution and metric outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from segment_warehouse.config import get_settings
from segment_warehouse.dbt_runner import DbtRunResult, run_dbt

FIXTURES = Path(__file__).parent / "fixtures" / "raw"
AS_OF = "2024-06-30"
LINEAGE = ("_source_file", "_line_number", "_loaded_at", "_batch_id")
RAW_COLUMNS: dict[str, tuple[str, ...]] = {
    "crm_contacts": (
        "contact_id", "email", "phone", "first_name", "last_name", "birth_date", "gender",
        "country", "city", "postal_code", "marketing_consent", "created_at", "updated_at",
    ),
    "analytics_events": (
        "message_id", "type", "event", "anonymous_id", "user_id", "timestamp", "context",
        "properties", "traits",
    ),
    "transactions_orders": (
        "order_id", "contact_id", "email", "order_ts", "status", "currency", "total_amount",
        "discount_amount", "items_count", "channel", "updated_at",
    ),
}  # fmt: skip
EVENT_KEYS = {"message_id": "messageId", "anonymous_id": "anonymousId", "user_id": "userId"}


def _create_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists raw")
    for table, columns in RAW_COLUMNS.items():
        cols = ", ".join(f"{c} varchar" for c in columns)
        con.execute(
            f"create table if not exists raw.{table} ({cols}, _source_file varchar, "
            "_line_number bigint, _loaded_at timestamptz, _batch_id varchar)"
        )


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, object]]) -> None:
    columns = (*RAW_COLUMNS[table], *LINEAGE)
    placeholders = ", ".join("?" for _ in columns)
    con.executemany(
        f"insert into raw.{table} ({', '.join(columns)}) values ({placeholders})",
        [[row.get(c) for c in columns] for row in rows],
    )


def _csv_rows(path: Path) -> list[dict[str, object]]:
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def _event_rows(path: Path) -> list[dict[str, object]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        row: dict[str, object] = {
            c: obj.get(EVENT_KEYS.get(c, c)) for c in RAW_COLUMNS["analytics_events"]
        }
        for key in ("context", "properties", "traits"):
            row[key] = json.dumps(obj.get(key) or {})
        row["_source_file"] = obj["_source_file"]
        row["_line_number"] = obj["_line_number"]
        rows.append(row)
    return rows


def load_fixture(con: duckdb.DuckDBPyConnection, batch_id: str, loaded_at: datetime) -> None:
    """Write the fixture into raw.* as ingest.py would (all text + lineage)."""
    _create_raw_tables(con)
    batches = {
        "crm_contacts": _csv_rows(FIXTURES / "crm_contacts.csv"),
        "transactions_orders": _csv_rows(FIXTURES / "transactions_orders.csv"),
        "analytics_events": _event_rows(FIXTURES / "analytics_events.jsonl"),
    }
    for table, rows in batches.items():
        for row in rows:
            row["_loaded_at"] = loaded_at
            row["_batch_id"] = batch_id
        _insert(con, table, rows)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("dbt_wh")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGMENTS_WAREHOUSE_DIR", str(root / "warehouse"))
    mp.setenv("SEGMENTS_REPORTS_DIR", str(root / "reports"))
    mp.setenv("SEGMENTS_PII_KEY", "test-key-not-secret")
    mp.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    settings = get_settings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(settings.warehouse_db))
    try:
        load_fixture(con, "b1", datetime(2024, 6, 30, 23, 0, tzinfo=UTC))
    finally:
        con.close()
    yield settings.warehouse_db
    mp.undo()


def _build(extra: list[str] | None = None) -> DbtRunResult:
    return run_dbt(
        ["build", *(extra or [])],
        vars={"as_of_date": AS_OF, "reporting_currency": "USD"},
    )


def _query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _customer(db: Path, source: str, source_id: str) -> str | None:
    rows = _query(
        db,
        f"select customer_id from marts.identity_map "
        f"where source = '{source}' and source_id = '{source_id}'",
    )
    assert len(rows) <= 1
    return rows[0][0] if rows else None


@pytest.fixture(scope="module")
def first_build(warehouse: Path) -> dict[str, str]:
    result = _build()
    assert result.success, result.summary()
    assert not result.failed_nodes
    return dict(
        _query(warehouse, "select source || ':' || source_id, customer_id from marts.identity_map")
    )


def test_build_runs_unit_tests_and_data_tests(first_build: dict[str, str], warehouse: Path) -> None:
    # the build above ran every model, data test and unit test without failure
    assert first_build


def test_duplicate_contacts_merge_on_email_case_and_space(
    first_build: dict[str, str], warehouse: Path
) -> None:
    assert _customer(warehouse, "crm", "C001") == _customer(warehouse, "crm", "C002")


def test_latest_contact_version_and_consent_win(
    first_build: dict[str, str], warehouse: Path
) -> None:
    city, consent = _query(
        warehouse,
        "select city, marketing_consent from intermediate.int_contacts_deduplicated "
        "where contact_id = 'C001'",
    )[0]
    assert city == "Oakland"
    assert consent is True
    alice = _customer(warehouse, "crm", "C001")
    (profile_consent,) = _query(
        warehouse,
        f"select marketing_consent from marts.customer_profiles where customer_id = '{alice}'",
    )[0]
    assert profile_consent is False  # C002 (updated later) said "N"


def test_guest_checkout_links_by_email(first_build: dict[str, str], warehouse: Path) -> None:
    assert _customer(warehouse, "transactions", "O2") == _customer(warehouse, "crm", "C001")
    assert _customer(warehouse, "analytics", "A2") == _customer(warehouse, "transactions", "O4")


def test_household_phone_not_merged_but_same_name_is(
    first_build: dict[str, str], warehouse: Path
) -> None:
    bob = _customer(warehouse, "crm", "C003")
    assert bob != _customer(warehouse, "crm", "C004")  # same phone, other person
    assert bob == _customer(warehouse, "crm", "C005")  # same phone + same name


def test_placeholders_do_not_merge(first_build: dict[str, str], warehouse: Path) -> None:
    assert _customer(warehouse, "crm", "C006") != _customer(warehouse, "crm", "C007")
    assert _customer(warehouse, "crm", "C010") != _customer(warehouse, "crm", "C011")
    assert _customer(warehouse, "transactions", "O6") != _customer(warehouse, "transactions", "O7")
    assert _customer(warehouse, "analytics", "A6") is None


def test_shared_device_and_bots_resolve_to_nobody(
    first_build: dict[str, str], warehouse: Path
) -> None:
    assert _customer(warehouse, "crm", "C008") != _customer(warehouse, "crm", "C009")
    assert _customer(warehouse, "analytics", "A3") is None
    assert _customer(warehouse, "analytics", "BOT1") is None
    assert _customer(warehouse, "analytics", "A4") is None  # anonymous-only: not a customer
    assert _customer(warehouse, "analytics", "A1") == _customer(warehouse, "crm", "C001")
    bot_sessions = _query(
        warehouse, "select count(*) from marts.fct_sessions where anonymous_id = 'BOT1'"
    )
    assert bot_sessions == [(0,)]


def test_identity_map_covers_every_record_once(
    first_build: dict[str, str], warehouse: Path
) -> None:
    counts = dict(_query(warehouse, "select source, count(*) from marts.identity_map group by 1"))
    assert counts == {"crm": 12, "transactions": 8, "analytics": 3}  # A1, A2, A5
    (customers,) = _query(warehouse, "select count(*) from marts.customer_profiles")[0]
    # Alice(C001,C002,O1,O2) Bob(C003,C005,O3,O8) + C004 C006 C007 C008 C009 C010 C011 C012
    # + guest O4 + placeholder guests O6 O7
    assert customers == 13


def test_revenue_excludes_refunds_and_converts_currency(
    first_build: dict[str, str], warehouse: Path
) -> None:
    alice = _customer(warehouse, "crm", "C001")
    bob = _customer(warehouse, "crm", "C003")
    rows = dict(
        (r[0], r[1:])
        for r in _query(
            warehouse,
            "select customer_id, orders_count, lifetime_revenue, lifecycle_stage "
            "from marts.customer_profiles",
        )
    )
    assert rows[alice][0] == 2
    assert rows[alice][1] == pytest.approx(100 + 50 * 1.08 / 1.0)
    assert rows[bob][0] == 1  # O3 refunded later; O8 completed in Dec 2023 (GBP 1.27)
    assert rows[bob][1] == pytest.approx(40 * 1.27)
    assert rows[bob][2] == "churned"
    frank = _customer(warehouse, "crm", "C008")
    assert rows[frank][0] == 0 and rows[frank][2] == "prospect"  # pending order only


def test_sessions_gap_and_future_events(first_build: dict[str, str], warehouse: Path) -> None:
    sessions = _query(
        warehouse,
        "select anonymous_id, count(*), sum(events_count) from marts.fct_sessions "
        "group by 1 order by 1",
    )
    assert ("A1", 2, 3) in sessions  # duplicate m02 dropped, 45-minute gap splits
    assert ("A5", 1, 1) in sessions  # the 2030 event is excluded


def test_no_raw_pii_in_marts(first_build: dict[str, str], warehouse: Path) -> None:
    columns = _query(
        warehouse,
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'marts' "
        "and (column_name like '%email%' or column_name like '%phone%')",
    )
    assert {c for _, c in columns} <= {"email_hash", "phone_hash"}
    hashes = _query(
        warehouse, "select email_hash from marts.customer_profiles where email_hash is not null"
    )
    assert hashes and all(len(h) == 64 and "@" not in h for (h,) in hashes)


def test_customer_ids_stable_across_builds_and_unrelated_data(
    first_build: dict[str, str], warehouse: Path
) -> None:
    assert _build().success
    second = dict(
        _query(warehouse, "select source || ':' || source_id, customer_id from marts.identity_map")
    )
    assert second == first_build

    con = duckdb.connect(str(warehouse))
    try:
        _insert(
            con,
            "crm_contacts",
            [
                {
                    "contact_id": "C000", "email": "zed@example.org", "first_name": "Zed",
                    "updated_at": "2024-06-29T00:00:00Z", "_source_file": "crm/late.csv",
                    "_line_number": 2, "_loaded_at": datetime(2024, 7, 1, tzinfo=UTC),
                    "_batch_id": "b2",
                },
            ],
        )  # fmt: skip
    finally:
        con.close()
    assert _build().success
    third = dict(
        _query(warehouse, "select source || ':' || source_id, customer_id from marts.identity_map")
    )
    assert "crm:C000" in third
    assert {k: third[k] for k in first_build} == first_build


def _sessions(db: Path) -> list[tuple]:
    return _query(
        db,
        "select anonymous_id, session_start_at, session_end_at, events_count, customer_id "
        "from marts.fct_sessions order by all",
    )


def test_incremental_sessions_match_full_refresh(
    first_build: dict[str, str], warehouse: Path
) -> None:
    late = {
        "type": "page", "anonymous_id": "A1", "user_id": "C001", "context": "{}",
        "properties": "{}", "traits": "{}", "_source_file": "analytics/late.jsonl",
        "_loaded_at": datetime(2024, 7, 2, tzinfo=UTC), "_batch_id": "b3",
    }  # fmt: skip
    con = duckdb.connect(str(warehouse))
    try:
        _insert(
            con,
            "analytics_events",
            [
                # bridges A1's two sessions (10:10 and 10:55 are both within 30 min)
                {
                    **late,
                    "message_id": "m20",
                    "timestamp": "2024-06-28T10:35:00Z",
                    "_line_number": 1,
                },
                # re-delivery of an already loaded event
                {
                    **late,
                    "message_id": "m01",
                    "timestamp": "2024-06-28T10:00:00Z",
                    "_line_number": 2,
                },
            ],
        )
        # a later file refunds O1: only that order is re-ranked incrementally
        _insert(
            con,
            "transactions_orders",
            [
                {
                    "order_id": "O1", "contact_id": "C001", "email": "alice@example.com",
                    "order_ts": "2024-06-01T10:00:00Z", "status": "refunded",
                    "currency": "USD", "total_amount": "100.00", "discount_amount": "0",
                    "items_count": "2", "channel": "web", "updated_at": None,
                    "_source_file": "transactions/orders_2024-07-02.csv", "_line_number": 2,
                    "_loaded_at": datetime(2024, 7, 2, tzinfo=UTC), "_batch_id": "b3",
                }
            ],
        )  # fmt: skip
    finally:
        con.close()
    assert _build().success
    assert _query(warehouse, "select status from marts.fct_orders where order_id = 'O1'") == [
        ("refunded",)
    ]
    deduplicated_orders = "select * from intermediate.int_orders_deduplicated order by order_id"
    orders = _query(warehouse, deduplicated_orders)
    incremental = _sessions(warehouse)
    a1 = [row for row in incremental if row[0] == "A1"]
    assert len(a1) == 1 and a1[0][3] == 4

    # as_of_date moves past the "2030" event of A5: it becomes eligible
    later = run_dbt(["build"], vars={"as_of_date": "2030-01-01"})
    assert later.success
    incremental = _sessions(warehouse)
    assert len([row for row in incremental if row[0] == "A5"]) == 2
    mapped = _query(warehouse, "select * from marts.identity_map order by all")

    full = run_dbt(["build", "--full-refresh"], vars={"as_of_date": "2030-01-01"})
    assert full.success
    assert _sessions(warehouse) == incremental
    assert _query(warehouse, "select * from marts.identity_map order by all") == mapped
    assert _query(warehouse, deduplicated_orders) == orders


def test_failed_node_raises_dbt_build_error(first_build: dict[str, str], warehouse: Path) -> None:
    from segment_warehouse.dbt_runner import DbtBuildError

    with pytest.raises(DbtBuildError) as excinfo:
        run_dbt(["run", "--select", "customer_rule_segments"], vars={"as_of_date": "not-a-date"})
    assert [n.name for n in excinfo.value.failures] == ["customer_rule_segments"]
    assert "customer_rule_segments" in str(excinfo.value)


def test_pipeline_date_reaches_models_without_reparsing_the_project(
    first_build: dict[str, str], warehouse: Path
) -> None:
    """The pipeline passes as_of_date as SEGMENTS_AS_OF_DATE: it reaches the
    models, and a new date re-parses only the files that use it."""
    from segment_warehouse.dbt_runner import DbtBuildError, DbtCommand, run_dbt_session

    select = ["run", "--select", "customer_rule_segments"]
    vars = {"reporting_currency": "USD"}
    run_dbt_session([DbtCommand("run", select)], vars=vars, as_of_date="2030-01-01")
    run_dbt_session([DbtCommand("run", select)], vars=vars, as_of_date="2030-01-02")
    perf = json.loads((get_settings().dbt_target_dir / "perf_info.json").read_text())
    assert perf["is_partial_parse_enabled"]
    assert 0 < perf["parsed_path_count"] < perf["path_count"] / 4
    compiled = get_settings().dbt_target_dir / "compiled" / "segment_warehouse" / "models"
    assert (
        "cast('2030-01-02' as date)"
        in (compiled / "marts" / "customer_rule_segments.sql").read_text()
    )
    with pytest.raises(DbtBuildError):
        run_dbt_session([DbtCommand("run", select)], vars=vars, as_of_date="not-a-date")


def _phone_cases() -> list[tuple[str, str | None]]:
    """Generated phone strings of every shape the fast path handles (and some it must not)."""
    import random

    rng = random.Random(7)

    def digits(n: int, first: str = "0123456789") -> str:
        return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(n - 1))

    def spaced(s: str) -> str:
        if rng.random() < 0.3:
            return s
        sep, parts, i = rng.choice([" ", ".", "-"]), [], 0
        while i < len(s):
            k = rng.randint(1, 4)
            parts.append(s[i : i + k])
            i += k
        out = sep.join(parts)
        return f"({out[:3]}) {out[3:]}" if rng.random() < 0.1 else out

    ccs = ["1", "44", "49", "33", "61", "31", "46", "81", "39", "7", "353"]
    countries = [None, "US", "CA", "GB", "DE", "FR", "AU", "NL", "SE", "JP", "IT", "XX"]
    cases: list[tuple[str, str | None]] = [
        (p, "US")
        for p in (
            "+44(0)20 7946 0000", "555-1234 ext 5", "tel:+16505551234", "+1 650 555 1234 x12",
            "0044 (0) 7911 123456", "1-800-FLOWERS", "00 1 650 555 1234", "+1-(650)-555-1234",
            "+44 1800 20 1234", "+61 1831 234 567", "+1 555 1234",
        )
    ]  # fmt: skip
    for _ in range(20000):
        kind, country, cc = rng.random(), rng.choice(countries), rng.choice(ccs)
        national = digits(rng.randint(2, 15), "0123456789" if rng.random() < 0.3 else "123456789")
        if kind < 0.35:
            phone = "+" + spaced(cc + national)
        elif kind < 0.5:
            phone = "00" + cc + " " + spaced(national)
        elif kind < 0.85:
            phone = spaced(("0" if rng.random() < 0.5 else "") + national)
        else:
            phone = spaced("1" + national)
        cases.append((phone, country))
    return cases


def con_answers(fast_sql: str, phones: list[str]) -> list[str | None]:
    con = duckdb.connect()
    try:
        return [
            con.execute(
                f"select ({fast_sql.rstrip().removesuffix('as fast')}) "
                "from (select ? as p, ? as c)",
                [p, "US" if not p.startswith("0044") else "GB"],
            ).fetchone()[0]
            for p in phones
        ]
    finally:
        con.close()


def test_phone_fast_path_matches_udf(first_build: dict[str, str]) -> None:
    """The SQL fast path (macro phone_e164_fast) gives the UDF's answer whenever it answers."""
    from segment_warehouse.dbt_plugin import register_udfs

    compiled = run_dbt(["compile", "--inline", "select {{ phone_e164_fast('p', 'c') }} as fast"])
    sql = compiled.stdout[compiled.stdout.index("select") :]
    con = duckdb.connect()
    try:
        register_udfs(con, "test-key-not-secret")
        con.execute("create table cases (p varchar, c varchar)")
        con.executemany("insert into cases values (?, ?)", _phone_cases())
        total, answered, wrong = con.execute(
            f"select count(*), count(fast), count(*) filter (where fast is distinct from udf "
            f"and fast is not null) from (select ({sql.rstrip().removesuffix('as fast')}) as fast, "
            "normalise_phone(p, c) as udf from cases)"
        ).fetchone()
    finally:
        con.close()
    assert wrong == 0
    assert answered > total * 0.1  # random lengths: many are left to the UDF
    common = con_answers(
        sql, ["+1 635 555 8784", "(936) 555-1962", "0044 73 2541 7494", "+33696432162"]
    )
    assert all(common)
