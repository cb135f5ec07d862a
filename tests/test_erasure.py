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
