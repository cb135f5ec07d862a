"""Right to erasure on a hand-made warehouse: the person disappears everywhere."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from segment_warehouse.erasure import apply_erasure_requests
from segment_warehouse.privacy import keyed_hash, phone_key
from segment_warehouse.warehouse import ensure_schemas, warehouse

ALICE = {"contact_id": "C1", "email": "Alice@Example.com", "anon": "anon-a", "order": "O1"}


def _build(con: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(con)
    con.execute(
        "create table raw.crm_contacts as select * from (values "
        "('C1', ' Alice@Example.com ', '+14155550100'), "
        "('C10', 'bob@example.com', '+14155550111'), "
        "('C2', 'alice@example.com', null)) t(contact_id, email, phone)"
    )
    con.execute(
        "create table raw.transactions_orders as select * from (values "
        "('O1', 'C1', null), ('O2', null, 'ALICE@example.com'), ('O3', 'C10', null)) "
        "t(order_id, contact_id, email)"
    )
    con.execute(
        "create table raw.analytics_events as select * from (values "
        "('m1', 'anon-a', 'C1', '{}'), ('m2', 'anon-a', null, '{}'), "
        "('m3', 'anon-b', null, '{\"email\": \"alice@example.com\"}'), "
        "('m4', 'anon-c', 'C10', '{}')) t(message_id, anonymous_id, user_id, traits)"
    )
    con.execute(
        "create table raw.erasure_requests as select * from (values "
        "('R1', null, 'alice@example.com', '2026-11-01T00:00:00Z')) "
        "t(request_id, contact_id, email, requested_at)"
    )
    con.execute(
        "insert into audit.quarantine values "
        "('b', 'crm', 'crm/x.csv', 3, 'bad', 'C1,alice@example.com,,', now()), "
        "('b', 'crm', 'crm/x.csv', 4, 'bad', 'C10,bob@example.com,,', now())"
    )
    con.execute(
        "create table marts.identity_map as select * from (values "
        "('crm', 'C1', 'cus_a'), ('crm', 'C2', 'cus_a'), ('transactions', 'O1', 'cus_a'), "
        "('analytics', 'anon-a', 'cus_a'), ('crm', 'C10', 'cus_b'), "
        "('transactions', 'O3', 'cus_b')) t(source, source_id, customer_id)"
    )
    con.execute(
        "create table marts.customer_profiles as select * from (values "
        "('cus_a', 10.0), ('cus_b', 5.0)) t(customer_id, lifetime_revenue)"
    )
    con.execute(
        "create table staging.stg_crm__contacts as select contact_id, "
        "lower(trim(email)) as email from raw.crm_contacts"
    )
    con.execute(
        "create table segments.segment_membership_history as select * from (values "
        "('cus_a', 1), ('cus_b', 2)) t(customer_id, segment_id)"
    )


def test_erasure_removes_every_trace(segments_env: Path, all_table_text) -> None:
    with warehouse() as con:
        _build(con)
    summary = apply_erasure_requests(run_id="r1")
    assert summary.requests_processed == 1
    with warehouse(read_only=True) as con:
        text = all_table_text(con)
        for needle in (
            "alice@example.com",
            "'c1'",
            "'c2'",
            "'o1'",
            "'o2'",
            "anon-a",
            "anon-b",
            "cus_a",
        ):
            assert needle not in text, needle
        # the other person is untouched (C10 must not match "C1")
        assert con.execute("select count(*) from raw.crm_contacts").fetchone() == (1,)
        assert con.execute("select count(*) from raw.transactions_orders").fetchone() == (1,)
        assert con.execute("select count(*) from audit.quarantine").fetchone() == (1,)
        assert con.execute("select count(*) from marts.identity_map").fetchone() == (2,)
        log = con.execute(
            "select request_id, subject_hash, rows_deleted from audit.erasure_log"
        ).fetchone()
        assert log[0] == "R1" and log[2] > 0
        assert log[1] == keyed_hash("alice@example.com", "test-secret")


def _suppressed(con: duckdb.DuckDBPyConnection, kind: str, value: str, key: str) -> bool:
    row = con.execute(
        "select count(*) from audit.erasure_suppression "
        "where identifier_type = ? and identifier_hash = ?",
        [kind, keyed_hash(value, key)],
    ).fetchone()
    return bool(row and row[0])


def test_suppression_list_uses_the_one_keyed_hash(segments_env: Path) -> None:
    """#13: the suppression list is privacy.keyed_hash (HMAC-SHA256), not a second
    sha256(key || 0x1f || value) digest (this failed before: no stored hash matched)."""
    with warehouse() as con:
        _build(con)
    apply_erasure_requests()
    with warehouse(read_only=True) as con:
        key = "test-secret"
        assert _suppressed(con, "email", "alice@example.com", key)
        assert _suppressed(con, "contact_id", "C1", key)
        assert _suppressed(con, "anonymous_id", "anon-a", key)
        assert _suppressed(con, "order_id", "O2", key)
        # #15: the phone is suppressed too (as its last 10 digits).
        assert _suppressed(con, "phone", phone_key("+14155550100") or "", key)
        assert not _suppressed(con, "contact_id", "C10", key)
        assert not _suppressed(con, "email", "bob@example.com", key)
        schemes = con.execute(
            "select distinct hash_scheme from audit.erasure_suppression"
        ).fetchall()
        assert schemes == [("hmac-sha256",)]


def test_rerun_does_not_reprocess(segments_env: Path) -> None:
    with warehouse() as con:
        _build(con)
    assert apply_erasure_requests().requests_processed == 1
    assert apply_erasure_requests().requests_processed == 0


def test_missing_secret_is_a_clear_error(
    segments_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with warehouse() as con:
        _build(con)
    monkeypatch.delenv("SEGMENTS_PII_KEY")
    monkeypatch.delenv("SEGMENTS_DEMO_MODE", raising=False)
    with pytest.raises(Exception, match="SEGMENTS_PII_KEY"):
        apply_erasure_requests()


def test_redelivered_files_do_not_bring_the_person_back(segments_env: Path, all_table_text) -> None:
    import gzip
    import json

    from segment_warehouse.ingest import ERASED_REASON, load_source

    with warehouse() as con:
        _build(con)
    apply_erasure_requests()
    with warehouse() as con:  # let the loader create the real raw tables
        con.execute("drop table raw.crm_contacts; drop table raw.analytics_events")
    landing = segments_env / "landing"
    (landing / "crm").mkdir()
    (landing / "crm" / "contacts_late.csv").write_text(
        "contact_id,email,updated_at\n"
        "C1,alice@example.com,2026-11-10T00:00:00Z\n"
        "C77,other@example.com,2026-11-10T00:00:00Z\n"
        "C78, ALICE@EXAMPLE.COM ,2026-11-10T00:00:00Z\n"
    )
    (landing / "analytics").mkdir()
    ts = "2026-11-10T00:00:00Z"
    events = [
        {"messageId": "x1", "type": "page", "anonymousId": "anon-a", "timestamp": ts},
        {"messageId": "x2", "type": "page", "anonymousId": "anon-z", "timestamp": ts},
        {"messageId": "x3", "type": "identify", "anonymousId": "anon-y",
         "traits": {"email": "alice@example.com"}, "timestamp": ts},
    ]  # fmt: skip
    with gzip.open(landing / "analytics" / "events_late.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(e) for e in events) + "\n")

    crm = load_source("crm")
    analytics = load_source("analytics")
    assert (crm.rows_loaded, crm.rows_quarantined) == (1, 2)
    assert (analytics.rows_loaded, analytics.rows_quarantined) == (1, 2)
    with warehouse(read_only=True) as con:
        rows = con.execute(
            "select source, line_number, reason, raw_record from audit.quarantine "
            "where reason = ? order by source, line_number",
            [ERASED_REASON],
        ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [
            ("analytics", 1),
            ("analytics", 3),
            ("crm", 2),
            ("crm", 4),
        ]
        assert all(r[3] is None for r in rows)  # the content is not kept
        assert "alice" not in all_table_text(con)


# --------------------------------------------------------------------------- issue 15
def _land(root: Path, rel: str, text: str) -> None:
    path = root / "landing" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _erase_alice_with_loader_tables(segments_env: Path) -> None:
    with warehouse() as con:
        _build(con)
    apply_erasure_requests()
    with warehouse() as con:  # let the loader create the real raw tables
        con.execute("drop table raw.crm_contacts; drop table raw.analytics_events")


def test_malformed_rows_and_phone_of_an_erased_person_keep_nothing(
    segments_env: Path, all_table_text, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segment_warehouse import ingest

    monkeypatch.setenv("SEGMENTS_LANDING_SETTLE_SECONDS", "0")
    _erase_alice_with_loader_tables(segments_env)
    _land(
        segments_env,
        "crm/late.csv",
        "contact_id,email,phone,first_name,updated_at\n"
        "C50,alice@example.com,+14155550100,Alice,2026-11-10T00:00:00Z,extra\n"  # 2: malformed
        "C51,new@example.com,(415) 555-0100,Alice,2026-11-10T00:00:00Z\n"  # 3: erased phone
        "C52,carol@example.com,+442079460958,Carol,2026-11-10T00:00:00Z,x\n"  # 4: not erased
        "C53,dave@example.com,,Dave,2026-11-10T00:00:00Z\n",
    )
    _land(
        segments_env,
        "analytics/late.jsonl",
        '{"messageId": "z1", "traits": {"email": "alice@example.com"}, oops\n'
        '{"messageId": "z2", "type": "page", "timestamp": "2026-11-10T00:00:00Z"}\n',
    )
    crm = ingest.load_source("crm")
    analytics = ingest.load_source("analytics")
    assert (crm.rows_loaded, crm.rows_quarantined) == (1, 3)
    assert (analytics.rows_loaded, analytics.rows_quarantined) == (1, 1)
    with warehouse(read_only=True) as con:
        rows = con.execute(
            "select source, line_number, reason, raw_record from audit.quarantine "
            "where source_file like '%late%' order by source, line_number"
        ).fetchall()
        text = all_table_text(con)
    assert [(r[0], r[1], r[2] == ingest.ERASED_REASON, r[3] is None) for r in rows] == [
        ("analytics", 1, True, True),
        ("crm", 2, True, True),
        ("crm", 3, True, True),
        ("crm", 4, False, False),  # someone else's malformed row keeps its content
    ]
    assert "alice" not in text and "555-0100" not in text and "4155550100" not in text


def test_guest_erasure_leaves_no_history_and_no_device_events(segments_env: Path) -> None:
    with warehouse() as con:
        _build(con)
        con.execute("delete from raw.erasure_requests")
        con.execute(
            "insert into raw.erasure_requests values "
            "('RG', null, 'guest@example.com', 'not a date')"
        )
        con.execute("insert into raw.transactions_orders values ('O9', null, ' Guest@Example.com')")
        con.execute("insert into marts.identity_map values ('transactions', 'O9', 'cus_g')")
        con.execute("insert into segments.segment_membership_history values ('cus_g', 3)")
        con.execute(
            "create table raw.events_props as select * from (values "
            "('m9', 'anon-g', '{\"order_id\": \"O9\"}'), ('m10', 'anon-g', '{}'), "
            "('m11', 'anon-x', '{\"order_id\": \"O3\"}')) t(message_id, anonymous_id, properties)"
        )
        con.execute("alter table raw.analytics_events add column properties varchar")
        con.execute(
            "insert into raw.analytics_events select message_id, anonymous_id, null, '{}', "
            "properties from raw.events_props"
        )
        con.execute("drop table raw.events_props")
    summary = apply_erasure_requests()
    assert summary.request_ids == ["RG"]  # an unparseable requested_at is still executed
    with warehouse(read_only=True) as con:
        assert con.execute(
            "select count(*) from segments.segment_membership_history where customer_id = 'cus_g'"
        ).fetchone() == (0,)
        events = con.execute("select message_id from raw.analytics_events order by 1").fetchall()
        assert ("m9",) not in events and ("m10",) not in events and ("m11",) in events
        assert con.execute(
            "select count(*) from raw.transactions_orders where order_id = 'O9'"
        ).fetchone() == (0,)


def test_erased_values_leave_no_freed_pages_and_no_models(segments_env: Path) -> None:
    from segment_warehouse.config import get_settings

    settings = get_settings()
    with warehouse() as con:
        _build(con)
        # Enough rows that the person's values are written to data blocks, not only the WAL.
        con.execute(
            "insert into raw.crm_contacts select 'X' || i, 'filler' || i || '@example.com', "
            "null from range(20000) t(i)"
        )
        con.execute("checkpoint")
    assert b"alice@example.com" in settings.warehouse_db.read_bytes().lower()
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / "kmeans_run1.joblib").write_bytes(b"model that saw alice")
    summary = apply_erasure_requests()
    assert summary.database_rewritten and summary.models_dropped == 1
    data = settings.warehouse_db.read_bytes().lower()
    assert b"alice@example.com" not in data  # what `grep -a` would find
    assert not list(settings.models_dir.iterdir())
    with warehouse(read_only=True) as con:  # the rewritten file is a whole warehouse
        assert con.execute("select count(*) from raw.crm_contacts").fetchone() == (20001,)
        assert con.execute("select count(*) from audit.erasure_log").fetchone() == (1,)


def test_a_changed_pii_key_is_refused(segments_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segment_warehouse.privacy import PiiKeyMismatch

    with warehouse() as con:
        _build(con)
    apply_erasure_requests()
    monkeypatch.setenv("SEGMENTS_PII_KEY", "another-secret")
    with pytest.raises(PiiKeyMismatch, match="not the key this warehouse was built with"):
        apply_erasure_requests()
    with warehouse(read_only=True) as con:
        stored = con.execute("select fingerprint from audit.pii_key_fingerprint").fetchall()
    assert len(stored) == 1 and "test-secret" not in stored[0][0]


def test_a_failed_rewrite_is_finished_by_the_next_call(
    segments_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segment_warehouse import erasure
    from segment_warehouse.config import get_settings

    with warehouse() as con:
        _build(con)
    real = erasure.rewrite_database

    def disk_full(db: Path) -> None:
        raise OSError(28, "no space left on device while rewriting")

    monkeypatch.setattr(erasure, "rewrite_database", disk_full)
    with pytest.raises(OSError, match="no space left on device"):
        apply_erasure_requests()
    monkeypatch.setattr(erasure, "rewrite_database", real)
    again = apply_erasure_requests()
    assert again.requests_processed == 0 and again.database_rewritten
    assert b"alice@example.com" not in get_settings().warehouse_db.read_bytes().lower()
