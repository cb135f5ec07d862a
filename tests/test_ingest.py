"""Extract/load of the landing zone: contract checks, quarantine, idempotence, accounting."""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest
from landing_rows import CRM_HEADER, TX_HEADER, crm_row, event, tx_row

from segment_warehouse import ingest
from segment_warehouse.config import Settings, get_settings
from segment_warehouse.warehouse import connect


def land(settings: Settings, rel: str, content: str | bytes, *, gz: bool | None = None) -> Path:
    """Write a landing file; ``.gz`` names are gzip-compressed unless ``gz=False``."""
    path = settings.landing_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    if gz if gz is not None else rel.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # same content, same bytes (no timestamp)
    path.write_bytes(data)
    return path


def query(settings: Settings, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def quarantine(settings: Settings, source_file: str) -> list[tuple[Any, ...]]:
    return query(
        settings,
        "select line_number, reason, raw_record from audit.quarantine "
        "where source_file = ? order by line_number nulls first",
        [source_file],
    )


def manifest(settings: Settings) -> dict[str, tuple[Any, ...]]:
    rows = query(
        settings,
        "select source_file, status, rows_in_file, rows_loaded, rows_quarantined, "
        "duplicate_of, notes from audit.load_manifest",
    )
    return {r[0]: r[1:] for r in rows}


def assert_accounting(settings: Settings) -> None:
    """rows_loaded + rows_quarantined = rows_in_file, and both match the tables."""
    for rel, (status, in_file, loaded, quarantined, _dup, _notes) in manifest(settings).items():
        if status == "duplicate":
            assert loaded == quarantined == 0
            continue
        assert loaded + quarantined == in_file, rel
        source = rel.split("/")[0]
        table = ingest.SPECS[source].table
        (raw_n,) = query(settings, f"select count(*) from {table} where _source_file = ?", [rel])[0]
        (q_n,) = query(
            settings, "select count(*) from audit.quarantine where source_file = ?", [rel]
        )[0]
        assert (raw_n, q_n) == (loaded, quarantined), rel


# --------------------------------------------------------------------------- CSV rows
def test_crm_rows_loaded_as_text_with_lineage_and_bad_rows_quarantined(settings: Settings) -> None:
    lines = [
        CRM_HEADER,
        crm_row("c1"),
        crm_row("c2", updated=""),  # line 3: missing required
        crm_row("c3", updated="yesterday"),  # line 4
        crm_row("c4") + ",extra",  # line 5: wrong field count
        crm_row("c5", birth_date="1990-13-45", created_at="2024-01-01 08:00:00"),  # soft
        "",  # line 7: blank
        crm_row("c6", created_at="epoch"),  # line 8: not ISO-8601
    ]
    land(settings, "crm/contacts_2024-01-01.csv", "\r\n".join(lines) + "\r\n")

    summary = ingest.load_source("crm", batch_id="b1")

    assert summary.rows_loaded == 2 and summary.rows_quarantined == 5
    raw = query(
        settings,
        "select contact_id, email, city, birth_date, _source_file, _line_number, _batch_id "
        "from raw.crm_contacts order by _line_number",
    )
    # Values as landed (untrimmed, original case), empty -> NULL, bad soft value kept.
    assert raw == [
        ("c1", " C1@Example.com ", None, "1990-05-01", "crm/contacts_2024-01-01.csv", 2, "b1"),
        ("c5", " C5@Example.com ", None, "1990-13-45", "crm/contacts_2024-01-01.csv", 6, "b1"),
    ]
    q = quarantine(settings, "crm/contacts_2024-01-01.csv")
    assert [(n, r) for n, r, _ in q] == [
        (3, "missing required field: updated_at"),
        (4, "unparseable timestamp in updated_at: 'yesterday'"),
        (5, "wrong number of fields: expected 13, got 14"),
        (7, "blank line"),
        (8, "unparseable timestamp in created_at: 'epoch'"),
    ]
    assert q[0][2] == crm_row("c2", updated="")  # physical line, without line ending
    assert_accounting(settings)


def test_quoted_newlines_keep_physical_line_numbers(settings: Settings) -> None:
    multi = crm_row("c2", city='"San\nFrancisco\n"')  # spans lines 3-5
    content = "\n".join(
        [CRM_HEADER, crm_row("c1"), multi, crm_row("c3", updated="bad"), crm_row("c4")]
    )
    land(settings, "crm/a.csv.gz", content + "\n")

    ingest.load_source("crm")

    raw = query(settings, "select contact_id, city, _line_number from raw.crm_contacts order by 3")
    assert raw == [("c1", None, 2), ("c2", "San\nFrancisco\n", 3), ("c4", None, 7)]
    assert quarantine(settings, "crm/a.csv.gz") == [
        (6, "unparseable timestamp in updated_at: 'bad'", crm_row("c3", updated="bad"))
    ]


def test_multiline_bad_record_quarantined_with_all_its_lines(settings: Settings) -> None:
    bad = crm_row("c2", city='"Line1\nLine2"', updated="")
    land(settings, "crm/a.csv", "\n".join([CRM_HEADER, bad, crm_row("c3")]) + "\n")
    ingest.load_source("crm")
    assert quarantine(settings, "crm/a.csv") == [(2, "missing required field: updated_at", bad)]
    assert query(settings, "select _line_number from raw.crm_contacts") == [(4,)]


def test_transaction_checks(settings: Settings) -> None:
    lines = [
        TX_HEADER,
        tx_row("o1"),
        tx_row("o2", total_amount="-5.00"),
        tx_row("o3", currency="XXX"),
        tx_row("o4", status="shipped"),
        tx_row("o5", items_count="0"),
        tx_row("o6", discount_amount="abc"),
        tx_row("o7", order_ts=""),
        tx_row("o8", items_count="", discount_amount="", total_amount="0", currency="GBP"),
        tx_row("o9", total_amount="1e3"),
        tx_row("o10", order_ts="2024-02-30T00:00:00Z"),
    ]
    land(settings, "transactions/orders_1.csv", "\n".join(lines))  # no final newline

    ingest.load_source("transactions")

    assert query(settings, "select order_id, _line_number from raw.transactions_orders") == [
        ("o1", 2),
        ("o8", 9),
    ]
    assert [(n, r) for n, r, _ in quarantine(settings, "transactions/orders_1.csv")] == [
        (3, "negative total_amount: -5.00"),
        (4, "unknown currency: XXX"),
        (5, "unknown status: 'shipped' (expected completed, refunded, cancelled, pending)"),
        (6, "invalid items_count: '0' (expected an integer >= 1)"),
        (7, "invalid decimal in discount_amount: 'abc'"),
        (8, "missing required field: order_ts"),
        (10, "invalid decimal in total_amount: '1e3'"),
        (11, "unparseable timestamp in order_ts: '2024-02-30T00:00:00Z'"),
    ]
    assert_accounting(settings)


def test_erasure_requests_are_executed_or_escalated_never_parked_with_pii(
    settings: Settings,
) -> None:
    """#15: a request with an unparseable/missing requested_at, or without request_id, is
    loaded (and so executed); one that names nobody is quarantined without its content."""
    land(
        settings,
        "erasure/req.csv",
        "request_id,contact_id,email,requested_at\n"
        "r1,c1,,2024-03-01T00:00:00Z\n"
        "r2,,a@b.com,2024-03-01\n"
        "r3,,,2024-03-01\n"
        "r4,c2,,\n"
        "r5,,late@b.com,last tuesday\n"
        ",c9,,2024-03-01\n"
        "r7,c7,seven@b.com,2024-03-01,extra\n",
    )
    ingest.load_source("erasure")
    assert query(
        settings, "select request_id, requested_at from raw.erasure_requests order by 1"
    ) == [
        ("erasure/req.csv#L7", "2024-03-01"),
        ("r1", "2024-03-01T00:00:00Z"),
        ("r2", "2024-03-01"),
        ("r4", None),
        ("r5", "last tuesday"),
    ]
    q = quarantine(settings, "erasure/req.csv")
    assert [(n, r) for n, r, _ in q] == [
        (
            4,
            "erasure request not executable, escalate to the privacy team: "
            "missing required field: contact_id or email (one is required)",
        ),
        (
            8,
            "erasure request not executable, escalate to the privacy team: "
            "wrong number of fields: expected 4, got 5",
        ),
    ]
    assert all(raw is None for _, _, raw in q)  # the request's identifiers are not kept
    assert_accounting(settings)


def test_extra_column_ignored_and_noted_missing_optional_is_null(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Columns in another order, one extra, optional ones missing.
    land(
        settings,
        "crm/a.csv",
        "updated_at,Contact_ID,loyalty_tier\n2024-01-01T00:00:00Z,c1,gold\n",
    )
    with caplog.at_level(logging.WARNING, logger="segment_warehouse.ingest"):
        ingest.load_source("crm")
    assert query(settings, "select contact_id, email, updated_at from raw.crm_contacts") == [
        ("c1", None, "2024-01-01T00:00:00Z")
    ]
    notes = manifest(settings)["crm/a.csv"][5]
    assert "ignored extra columns: loyalty_tier" in notes
    assert "loyalty_tier" in caplog.text


# --------------------------------------------------------------------------- JSONL rows
def test_analytics_checks_blank_lines_and_duplicate_message_ids(settings: Settings) -> None:
    lines = [
        event("m1", userId="c1", traits={"email": "A@B.com"}),
        event("m1"),  # same messageId again: both land, dedupe is dbt's job
        "",  # 3: blank line
        '{"messageId": "m3", "type": "track",',  # 4: invalid JSON
        event("m4", type="alias"),
        event("m5", timestamp="yesterday"),
        event("m6", messageId=...),  # 7: no messageId
        "[1, 2]",  # 8
        event("m9", timestamp=...),
        event("m10", extra_field=1),  # 10: extra field ignored
        "   ",  # 11: whitespace only
        event("m12", messageId=""),
    ]
    land(settings, "analytics/events_1.jsonl.gz", "\n".join(lines) + "\n")

    summary = ingest.load_source("analytics")

    raw = query(
        settings,
        "select message_id, type, user_id, timestamp, context, properties, traits, _line_number "
        "from raw.analytics_events order by _line_number",
    )
    assert [r[0] for r in raw] == ["m1", "m1", "m10"]
    assert raw[0][1:4] == ("track", "c1", "2024-03-01T10:00:00Z")
    assert json.loads(raw[0][4]) == {"device": {"type": "mobile"}, "userAgent": "Mozilla"}
    assert json.loads(raw[0][6]) == {"email": "A@B.com"}
    assert raw[1][6] is None  # absent traits -> NULL
    assert [r[7] for r in raw] == [1, 2, 10]

    q = quarantine(settings, "analytics/events_1.jsonl.gz")
    reasons = {n: r for n, r, _ in q}
    assert reasons[3] == "blank line"
    assert reasons[4].startswith("invalid JSON: ")
    assert reasons[5] == "invalid type: 'alias' (expected identify, page, track)"
    assert reasons[6] == "unparseable timestamp in timestamp: 'yesterday'"
    assert reasons[7] == "missing required field: messageId"
    assert reasons[8] == "not a JSON object: array"
    assert reasons[9] == "missing required field: timestamp"
    assert reasons[11] == "blank line"
    assert reasons[12] == "missing required field: messageId"
    assert q[1][2] == lines[3]
    assert summary.rows_loaded == 3 and summary.rows_quarantined == 9
    assert (
        "ignored extra fields: extra_field" in manifest(settings)["analytics/events_1.jsonl.gz"][5]
    )
    assert_accounting(settings)


def test_jsonl_crlf_and_no_trailing_newline(settings: Settings) -> None:
    land(settings, "analytics/e.jsonl", event("m1") + "\r\n\r\n" + event("m2"))
    ingest.load_source("analytics")
    assert query(settings, "select message_id, _line_number from raw.analytics_events") == [
        ("m1", 1),
        ("m2", 3),
    ]
    assert quarantine(settings, "analytics/e.jsonl") == [(2, "blank line", "")]


def test_jsonl_chunk_boundaries_keep_line_numbers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest.jsonl_reader, "JSONL_CHUNK_BYTES", 100)  # many tiny chunks
    lines = [event(f"m{i}") if i % 7 else "oops" for i in range(1, 60)]
    land(settings, "analytics/e.jsonl.gz", "\n".join(lines) + "\n")
    ingest.load_source("analytics")
    loaded = query(settings, "select message_id, _line_number from raw.analytics_events order by 2")
    assert loaded == [(f"m{i}", i) for i in range(1, 60) if i % 7]
    assert [n for n, _, _ in quarantine(settings, "analytics/e.jsonl.gz")] == [
        7,
        14,
        21,
        28,
        35,
        42,
        49,
        56,
    ]


# --------------------------------------------------------------------------- whole files
@pytest.mark.parametrize(
    ("rel", "content", "gz", "reason"),
    [
        (
            "crm/a.csv",
            "contact_id,email\nc1,x@y.z\n",
            None,
            "missing required column(s) in header: updated_at",
        ),
        ("crm/a.csv", "", None, "empty file"),
        ("crm/a.csv.gz", "", None, "empty file"),
        (
            "crm/a.csv",
            b"contact_id,updated_at\nc\xe9,2024-01-01\n",
            None,
            "not valid UTF-8: invalid continuation byte (byte b'\\xe9') at line 2",
        ),
        (
            "analytics/a.jsonl",
            b'{"messageId": "m1"}\n{"x": "\xff"}\n',
            None,
            "not valid UTF-8: invalid start byte (byte b'\\xff') at line 2",
        ),
        ("analytics/a.jsonl", "\n\n", None, "empty file (only blank lines)"),
        (
            "analytics/a.jsonl.gz",
            "{}",
            False,
            "not a gzip file (the name ends in .gz but the content is not gzip)",
        ),
        (
            "transactions/a.csv",
            "x",
            True,
            "file is gzip-compressed but its name does not end in .gz",
        ),
        (
            "crm/notes.txt",
            "hello",
            None,
            "unexpected file type (expected *.csv or *.csv.gz in crm/)",
        ),
        (
            "crm/a.csv",
            "contact_id,updated_at,Contact_Id\n",
            None,
            "duplicate column(s) in header: contact_id",
        ),
    ],
)
def test_whole_file_quarantine(
    settings: Settings, rel: str, content: str | bytes, gz: bool | None, reason: str
) -> None:
    land(settings, rel, content, gz=gz)
    summary = ingest.load_source(rel.split("/")[0])
    assert [(f.source_file, f.status, f.reason) for f in summary.files] == [
        (rel, "file_quarantined", reason)
    ]
    assert [(n, r) for n, r, _ in quarantine(settings, rel)] == [(None, reason)]
    assert manifest(settings)[rel][:4] == ("file_quarantined", 1, 0, 1)


def test_truncated_gzip_is_deferred_then_loaded_when_complete(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15: a .gz caught mid-upload is retried next run, not quarantined forever."""
    # Small chunks so that rows are inserted before the truncation is hit.
    monkeypatch.setattr(ingest.jsonl_reader, "JSONL_CHUNK_BYTES", 4096)
    rows = [event(f"m{i}") for i in range(2000)]
    full = gzip.compress(("\n".join(rows) + "\n").encode())
    path = land(settings, "analytics/a_truncated.jsonl.gz", full[: len(full) // 2], gz=False)
    land(settings, "analytics/b_ok.jsonl", event("ok") + "\n")
    summary = ingest.load_source("analytics")
    assert [(f.source_file, f.status, f.rows_loaded) for f in summary.files] == [
        ("analytics/b_ok.jsonl", "loaded", 1),
    ]
    assert [rel for rel, _ in summary.deferred] == ["analytics/a_truncated.jsonl.gz"]
    assert summary.deferred[0][1].startswith("truncated gzip file")
    # Rows decompressed before the truncation were rolled back with the file.
    assert query(settings, "select message_id from raw.analytics_events") == [("ok",)]
    assert "analytics/a_truncated.jsonl.gz" not in manifest(settings)

    path.write_bytes(full)  # the upload completes
    again = ingest.load_source("analytics")
    assert [(f.status, f.rows_loaded) for f in again.files] == [("loaded", 2000)]
    assert_accounting(settings)


def test_truncated_gzip_unchanged_past_the_grace_period_is_quarantined(
    settings: Settings,
) -> None:
    full = gzip.compress(("\n".join(event(f"m{i}") for i in range(500)) + "\n").encode())
    path = land(settings, "analytics/a.jsonl.gz", full[: len(full) // 2], gz=False)
    old = path.stat().st_mtime - ingest.TRUNCATED_GZIP_GRACE_SECONDS - 60
    os.utime(path, (old, old))
    summary = ingest.load_source("analytics")
    assert [(f.status, f.rows_loaded) for f in summary.files] == [("file_quarantined", 0)]
    assert (summary.files[0].reason or "").startswith("truncated gzip file")
    assert_accounting(settings)


def test_truncated_file_mid_batch_keeps_the_other_files_of_the_batch(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a and c share the transaction with b; b's rows (written before the truncation)
    # and its quarantined lines are deleted, a's and c's commit.
    monkeypatch.setattr(ingest.jsonl_reader, "JSONL_CHUNK_BYTES", 4096)
    land(settings, "analytics/a_ok.jsonl", event("a1") + "\n{bad\n")
    rows = [event(f"m{i}") for i in range(2000)]
    full = gzip.compress(("\n".join(rows) + "\n").encode())
    land(settings, "analytics/b_truncated.jsonl.gz", full[: len(full) // 2], gz=False)
    land(settings, "analytics/c_ok.jsonl", event("c1") + "\n")
    summary = ingest.load_source("analytics")
    assert [(f.source_file, f.status, f.rows_loaded) for f in summary.files] == [
        ("analytics/a_ok.jsonl", "loaded", 1),
        ("analytics/c_ok.jsonl", "loaded", 1),
    ]
    assert [rel for rel, _ in summary.deferred] == ["analytics/b_truncated.jsonl.gz"]
    assert sorted(query(settings, "select message_id from raw.analytics_events")) == [
        ("a1",),
        ("c1",),
    ]
    assert [n for n, _, _ in quarantine(settings, "analytics/a_ok.jsonl")] == [2]
    assert quarantine(settings, "analytics/b_truncated.jsonl.gz") == []
    assert_accounting(settings)


def test_truncated_gzip_csv_after_flushes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest.csv_reader, "CSV_FLUSH_ROWS", 10)
    content = "\n".join([TX_HEADER, *(tx_row(f"o{i}") for i in range(3000))]) + "\n"
    full = gzip.compress(content.encode())
    land(settings, "transactions/a.csv.gz", full[:-20], gz=False)  # cut the gzip trailer
    summary = ingest.load_source("transactions")
    assert summary.files == []
    assert summary.deferred[0][1].startswith("truncated gzip file")
    assert query(settings, "select count(*) from raw.transactions_orders") == [(0,)]
    assert_accounting(settings)


def test_header_only_csv_is_an_empty_delivery(settings: Settings) -> None:
    land(settings, "crm/a.csv", CRM_HEADER + "\n")
    ingest.load_source("crm")
    assert manifest(settings)["crm/a.csv"][:4] == ("loaded", 0, 0, 0)


# --------------------------------------------------------------------------- idempotence
def test_known_unchanged_files_are_not_hashed_again_changed_ones_are_loud(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = land(settings, "crm/a.csv", "\n".join([CRM_HEADER, crm_row("c1")]) + "\n")
    ingest.load_source("crm")
    hashed: list[str] = []
    real_sha256 = ingest.files.sha256_file
    monkeypatch.setattr(
        ingest.files, "sha256_file", lambda p: hashed.append(p.name) or real_sha256(p)
    )

    assert ingest.load_source("crm").skipped_already_loaded == ["crm/a.csv"]
    assert hashed == []  # same size and mtime as recorded: no second read of the file

    path.write_text("\n".join([CRM_HEADER, crm_row("c9")]) + "\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with caplog.at_level(logging.WARNING, logger="segment_warehouse.ingest"):
        again = ingest.load_source("crm")
    # #15: loud, not silent - an error in the log and a manifest row, data unchanged.
    assert hashed == ["a.csv"]
    assert [(f.status, f.rows_loaded) for f in again.files] == [("changed_after_load", 0)]
    assert "ERROR" in {r.levelname for r in caplog.records}
    statuses = query(
        settings,
        "select status from audit.load_manifest where source_file = 'crm/a.csv' order by loaded_at",
    )
    assert statuses == [("loaded",), ("changed_after_load",)]
    # Recorded once: the next run skips the changed file without a new row.
    assert ingest.load_source("crm").files == []
    assert "changed after it was loaded" in caplog.text
    assert query(settings, "select contact_id from raw.crm_contacts") == [("c1",)]


def test_rerun_and_redelivery_under_new_name(settings: Settings) -> None:
    content = "\n".join([CRM_HEADER, crm_row("c1"), crm_row("c2", updated="x")]) + "\n"
    land(settings, "crm/2024-01-01.csv.gz", content)
    first = ingest.load_source("crm")
    assert (first.rows_loaded, first.rows_quarantined) == (1, 1)

    again = ingest.load_source("crm")
    assert again.files == [] and again.skipped_already_loaded == ["crm/2024-01-01.csv.gz"]

    land(settings, "crm/2024-01-02_resent.csv.gz", content)  # same bytes, new name
    redelivered = ingest.load_source("crm")
    assert [(f.status, f.duplicate_of) for f in redelivered.files] == [
        ("duplicate", "crm/2024-01-01.csv.gz")
    ]
    assert manifest(settings)["crm/2024-01-02_resent.csv.gz"][:5] == (
        "duplicate",
        2,
        0,
        0,
        "crm/2024-01-01.csv.gz",
    )
    assert query(settings, "select count(*) from raw.crm_contacts") == [(1,)]
    assert query(settings, "select count(*) from audit.quarantine") == [(1,)]
    assert_accounting(settings)


def _state(settings: Settings) -> dict[str, Any]:
    """Everything a run produced, minus batch ids and timestamps."""
    state: dict[str, Any] = {
        "manifest": sorted(
            query(
                settings,
                "select source, source_file, sha256, status, duplicate_of, rows_in_file, "
                "rows_loaded, rows_quarantined from audit.load_manifest",
            )
        ),
        "quarantine": sorted(
            query(
                settings,
                "select source, source_file, line_number, reason, raw_record from audit.quarantine",
            ),
            key=repr,
        ),
    }
    for spec in ingest.SPECS.values():
        cols = ", ".join((*spec.columns, "_source_file", "_line_number"))
        state[spec.table] = sorted(query(settings, f"select {cols} from {spec.table}"), key=repr)
    return state


def _landing_zone(settings: Settings) -> None:
    land(settings, "crm/a.csv", "\n".join([CRM_HEADER, crm_row("c1"), crm_row("c2", updated="")]))
    land(settings, "crm/b.csv.gz", "\n".join([CRM_HEADER, crm_row("c3"), crm_row("c1")]))
    land(settings, "crm/c.csv", "\n".join([CRM_HEADER, crm_row("c1"), crm_row("c2", updated="")]))
    land(settings, "analytics/a.jsonl", "\n".join([event("m1"), "{bad", event("m2")]))
    land(settings, "analytics/b.jsonl.gz", "\n".join([event("m2"), event("m3")]))
    land(
        settings,
        "transactions/a.csv",
        "\n".join([TX_HEADER, tx_row("o1"), tx_row("o2", currency="XXX")]),
    )
    land(settings, "transactions/b.csv", "order_id\n1\n")
    land(settings, "erasure/a.csv", "request_id,contact_id,email,requested_at\nr1,c3,,2024-05-01\n")


@pytest.mark.parametrize(
    ("batch_max_rows", "committed_before_crash"),
    [
        # Default: files share a transaction, so the crash discards the whole open batch.
        (ingest.BATCH_MAX_ROWS, []),
        # One file per batch: the file committed before the crash stays.
        (1, ["crm/a.csv"]),
    ],
)
def test_crash_between_files_then_rerun_converges(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_max_rows: int,
    committed_before_crash: list[str],
) -> None:
    monkeypatch.setattr(ingest.loader, "BATCH_MAX_ROWS", batch_max_rows)
    _landing_zone(settings)
    ingest.load_all()
    expected = _state(settings)
    assert {r[3] for r in expected["manifest"]} == {"loaded", "duplicate", "file_quarantined"}
    assert_accounting(settings)

    # Same landing zone, fresh warehouse, and a crash before the second file.
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "warehouse2"))
    settings = get_settings()
    real_load_file = ingest.loader._load_file
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> ingest.FileLoadResult:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed")
        return real_load_file(*args, **kwargs)

    monkeypatch.setattr(ingest.loader, "_load_file", crashing)
    with pytest.raises(RuntimeError, match="worker killed"):
        ingest.load_all()
    assert [
        r[0] for r in query(settings, "select source_file from audit.load_manifest")
    ] == committed_before_crash
    assert query(settings, "select count(*) from audit.quarantine") == [
        (len(committed_before_crash),)  # crm/a.csv has one bad row
    ]
    monkeypatch.setattr(ingest.loader, "_load_file", real_load_file)
    ingest.load_all()
    assert _state(settings) == expected


def test_crash_mid_file_leaves_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    land(
        settings,
        "transactions/a.csv",
        "\n".join([TX_HEADER, tx_row("o1"), tx_row("o2", status="x")]),
    )

    real_insert_manifest = ingest.loader.insert_manifest

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    # Raw and quarantine rows are written by now; the manifest insert fails.
    monkeypatch.setattr(ingest.loader, "insert_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        ingest.load_source("transactions")
    assert query(settings, "select count(*) from raw.transactions_orders") == [(0,)]
    assert query(settings, "select count(*) from audit.quarantine") == [(0,)]
    assert query(settings, "select count(*) from audit.load_manifest") == [(0,)]

    monkeypatch.setattr(ingest.loader, "insert_manifest", real_insert_manifest)
    summary = ingest.load_source("transactions")
    assert (summary.rows_loaded, summary.rows_quarantined) == (1, 1)
    assert_accounting(settings)


def test_status_and_currency_codes_are_case_and_space_insensitive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`usd` / ` Completed ` are the same codes (staging normalises them too)."""
    landing = tmp_path / "landing"
    (landing / "transactions").mkdir(parents=True)
    (landing / "transactions" / "orders.csv").write_text(
        "order_id,order_ts,status,currency,total_amount\n"
        "O1,2026-01-01T00:00:00Z, Completed ,usd,10.00\n"
        "O2,2026-01-01T00:00:00Z,REFUNDED,Eur ,5\n"
        "O3,2026-01-01T00:00:00Z,done,USD,5\n"
        "O4,2026-01-01T00:00:00Z,pending,XXX,5\n"
    )
    monkeypatch.setenv("SEGMENTS_LANDING_DIR", str(landing))
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "wh"))
    summary = ingest.load_source("transactions")
    assert (summary.rows_loaded, summary.rows_quarantined) == (2, 2)


# --------------------------------------------------------------------------- CSV fast path
_AWKWARD_PLAIN_CSV = (
    "\ufeff" + CRM_HEADER + ",loyalty_tier\r\n"  # BOM, CRLF, an extra column
    + crm_row("c1") + ",gold\r\n"
    + "\r\n"  # blank line
    + crm_row("c2") + "\r\n"  # one field short
    + crm_row("c3", updated="not a date") + ",x\r\n"
    + "   \r\n"  # whitespace only: one field
    + crm_row("c4") + ",silver,extra\r\n"  # one field too many
    + crm_row("c5") + ",bronze"  # no final newline
)  # fmt: skip


def _load_state(settings: Settings) -> tuple[list[tuple[Any, ...]], ...]:
    return (
        query(settings, "select * exclude (_loaded_at, _batch_id) from raw.crm_contacts "
                        "order by all"),
        query(settings, "select source_file, line_number, reason, raw_record from audit.quarantine "
                        "order by all"),
        query(settings, "select source_file, status, rows_in_file, rows_loaded, rows_quarantined, "
                        "notes from audit.load_manifest order by all"),
    )  # fmt: skip


@pytest.mark.parametrize("gz", [False, True])
def test_quote_free_csv_fast_path_matches_the_csv_module(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    rel = "crm/awkward.csv" + (".gz" if gz else "")
    land(settings, rel, _AWKWARD_PLAIN_CSV.encode())
    used: list[str] = []
    real_plain = ingest.csv_reader.load_plain_csv
    monkeypatch.setattr(
        ingest.csv_reader, "load_plain_csv", lambda *a: used.append("fast") or real_plain(*a)
    )
    # The fast path quarantines from the lines it holds, without reading the file again.
    real_physical = ingest.files.physical_lines
    monkeypatch.setattr(
        ingest.files, "physical_lines", lambda *a: pytest.fail("quarantine text read again")
    )
    ingest.load_source("crm")
    fast = _load_state(settings)
    assert used == ["fast"]

    settings.warehouse_db.unlink()
    monkeypatch.setattr(ingest.files, "physical_lines", real_physical)
    monkeypatch.setattr(ingest.csv_reader, "CSV_FAST_PATH_MAX_BYTES", 0)  # forces the csv module
    ingest.load_source("crm")
    assert _load_state(settings) == fast and used == ["fast"]

    raw, rejected, files = fast
    assert [r[0] for r in raw] == ["c1", "c5"]
    assert [(line, reason.split(":")[0]) for _, line, reason, _ in rejected] == [
        (3, "blank line"),
        (4, "wrong number of fields"),
        (5, "unparseable timestamp in updated_at"),
        (6, "wrong number of fields"),
        (7, "wrong number of fields"),
    ]
    assert files[0][1:5] == ("loaded", 7, 2, 5)
    assert_accounting(settings)


def test_csv_with_quotes_takes_the_csv_module_path(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        ingest.csv_reader, "load_plain_csv", lambda *a: pytest.fail("fast path used")
    )
    land(settings, "crm/q.csv", CRM_HEADER + "\n" + crm_row("c1", city='"Portland, OR"') + "\n")
    assert ingest.load_source("crm").rows_loaded == 1
    assert query(settings, "select city from raw.crm_contacts") == [("Portland, OR",)]


def test_jsonl_sha256_hashed_while_reading_and_duplicates_found_in_one_batch(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reading pass hashes a JSONL file; a file the size of a loaded one is hashed first,
    so a redelivery in the same batch (plain or gzip) is still a duplicate."""
    import hashlib

    hashed: list[str] = []
    real_sha256 = ingest.files.sha256_file
    monkeypatch.setattr(
        ingest.files, "sha256_file", lambda p: hashed.append(p.name) or real_sha256(p)
    )
    body = "\n".join([event("m1"), event("m2"), "oops"]) + "\n"
    a = land(settings, "analytics/a.jsonl", body)
    b = land(settings, "analytics/b.jsonl", body)  # same bytes, same batch
    c = land(settings, "analytics/c.jsonl.gz", "\n".join([event("m3"), event("m4")]) + "\n")
    d = land(settings, "analytics/d.jsonl.gz", c.read_bytes(), gz=False)
    summary = ingest.load_source("analytics")
    assert [(f.source_file, f.status, f.duplicate_of) for f in summary.files] == [
        ("analytics/a.jsonl", "loaded", None),
        ("analytics/b.jsonl", "duplicate", "analytics/a.jsonl"),
        ("analytics/c.jsonl.gz", "loaded", None),
        ("analytics/d.jsonl.gz", "duplicate", "analytics/c.jsonl.gz"),
    ]
    assert hashed == ["b.jsonl", "d.jsonl.gz"]  # a and c: hashed by the reading pass
    shas = dict(query(settings, "select source_file, sha256 from audit.load_manifest"))
    for path in (a, b, c, d):
        assert shas[f"analytics/{path.name}"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert query(settings, "select count(*) from raw.analytics_events") == [(4,)]
    assert_accounting(settings)


def test_jsonl_rows_staged_across_files_and_a_file_rejected_late_leaves_none(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passing rows wait for one raw insert across files and chunks; a file rejected as a
    whole after some of its chunks were staged (or already inserted) leaves no row."""
    monkeypatch.setattr(ingest.jsonl_reader, "JSONL_CHUNK_BYTES", 400)
    monkeypatch.setattr(ingest.jsonl_reader, "JSONL_INSERT_ROWS", 5)
    monkeypatch.setattr(ingest.jsonl_reader, "JSONL_MAX_PENDING_STAGES", 2)
    monkeypatch.setattr(ingest.files, "MAX_QUARANTINE_ROWS_PER_FILE", 10)
    land(settings, "analytics/1.jsonl", "\n".join(event(f"a{i}") for i in range(12)) + "\n")
    for i in range(5):  # small files: flushed by the stage count, not the row count
        land(settings, f"analytics/0{i}.jsonl", event(f"s{i}") + "\n")
    flood = [event(f"b{i}") for i in range(12)] + ["oops"] * 11
    land(settings, "analytics/2.jsonl", "\n".join(flood) + "\n")
    land(settings, "analytics/3.jsonl.gz", "\n".join(event(f"c{i}") for i in range(3)) + "\n")
    summary = ingest.load_source("analytics")
    assert [(f.status, f.rows_loaded) for f in summary.files] == [("loaded", 1)] * 5 + [
        ("loaded", 12),
        ("file_quarantined", 0),
        ("loaded", 3),
    ]
    ids = [r[0] for r in query(settings, "select message_id from raw.analytics_events")]
    expected = [f"s{i}" for i in range(5)] + [f"a{i}" for i in range(12)]
    assert sorted(ids) == sorted(expected + [f"c{i}" for i in range(3)])
    assert [r[1][:10] for r in quarantine(settings, "analytics/2.jsonl")] == ["more than "]
    assert query(
        settings, "select count(*) from duckdb_tables() where table_name like '_ingest_stage%'"
    ) == [(0,)]
    assert_accounting(settings)


def test_raw_inserts_keep_insertion_order_whatever_the_caller_set(settings: Settings) -> None:
    """The loader inserts in order even on a connection that turned it off: unordered
    parallel inserts of a big load leave part-filled row groups that the first checkpoint
    after any later write merges, rewriting much of the raw table (measured at 1 M
    customers: docs/benchmarks.md, 2026-12-04; too big to reproduce in a unit test)."""
    land(settings, "analytics/e.jsonl", event("m1") + "\n")
    con = connect(settings=settings)
    try:
        con.execute("set preserve_insertion_order = false")
        assert ingest.load_source("analytics", con=con).rows_loaded == 1
        (kept,) = con.execute("select current_setting('preserve_insertion_order')").fetchone()
    finally:
        con.close()
    assert kept is True
