"""Hostile and messy deliveries (issue 15): nothing lost, nothing leaked, nothing blocks.

Every case ends in a quarantine row, a refused/deferred entry or a clear error; the good
files delivered with it load, and the next run is not blocked.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from landing_rows import CRM_HEADER, TX_HEADER, crm_row, event, tx_row

from segment_warehouse import ingest
from segment_warehouse.config import Settings

from . import corpus
from .corpus import write


def query(settings: Settings, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def manifest_row(settings: Settings, rel: str) -> tuple[Any, ...]:
    rows = query(
        settings,
        "select status, rows_in_file, rows_loaded, rows_quarantined, physical_lines, reason "
        "from audit.load_manifest where source_file = ?",
        [rel],
    )
    assert len(rows) == 1, rows
    return rows[0]


def reasons(settings: Settings, rel: str) -> list[tuple[int | None, str]]:
    return query(
        settings,
        "select line_number, reason from audit.quarantine where source_file = ? "
        "order by line_number nulls first",
        [rel],
    )


# --------------------------------------------------------------------------- silent loss
def test_stray_quote_does_not_swallow_rows(settings: Settings) -> None:
    rel, physical = corpus.stray_quote_csv(settings.landing_dir)
    ingest.load_source("crm")
    status, in_file, loaded, quarantined, lines, _ = manifest_row(settings, rel)
    # Every physical line but the header is a row: 37 load, the two quote lines do not.
    assert (status, lines, in_file, loaded, quarantined) == ("loaded", physical, 39, 37, 2)
    assert [n for n, _ in reasons(settings, rel)] == [5, 25]
    assert all(r.startswith("unbalanced quote") for _, r in reasons(settings, rel))
    cities = query(settings, "select distinct city from raw.crm_contacts")
    assert cities == [("Oakland",)]  # no field holds swallowed rows


def test_unterminated_quote_keeps_the_valid_rows(settings: Settings) -> None:
    rel, physical = corpus.unterminated_quote_csv(settings.landing_dir)
    ingest.load_source("crm")
    status, in_file, loaded, quarantined, lines, _ = manifest_row(settings, rel)
    assert (status, lines, in_file, loaded, quarantined) == ("loaded", physical, 49, 48, 1)
    assert [n for n, _ in reasons(settings, rel)] == [2]


def test_legitimate_multiline_field_is_still_trusted(settings: Settings) -> None:
    rows = [CRM_HEADER, crm_row("c1", city='"12 Main St,\nApt 4"'), crm_row("c2", city="Oakland")]
    write(settings.landing_dir, "crm/address.csv", "\n".join(rows) + "\n")
    ingest.load_source("crm")
    assert query(settings, "select contact_id, city from raw.crm_contacts order by 1") == [
        ("c1", "12 Main St,\nApt 4"),
        ("c2", "Oakland"),
    ]
    assert manifest_row(settings, "crm/address.csv")[:5] == ("loaded", 2, 2, 0, 4)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9999-12-31T00:00:00Z", "timestamp out of range in updated_at"),
        ("0001-01-01", "timestamp out of range in updated_at"),
        ("2100-01-01T00:00:00Z", "timestamp out of range in updated_at"),
        ("1899-12-31", "timestamp out of range in updated_at"),
        ("-0044-03-15", "unparseable timestamp in updated_at"),
        ("0044-03-15 BC", "unparseable timestamp in updated_at"),
        ("2099-12-31T23:59:59Z", None),
    ],
)
def test_timestamp_bound(settings: Settings, value: str, expected: str | None) -> None:
    write(settings.landing_dir, "crm/a.csv", f"{CRM_HEADER}\n{crm_row('c1', updated_at=value)}\n")
    ingest.load_source("crm")
    got = reasons(settings, "crm/a.csv")
    if expected is None:
        assert got == []
    else:
        assert len(got) == 1 and got[0][1].startswith(expected), got


def test_order_amount_beyond_the_bound_is_quarantined(settings: Settings) -> None:
    rows = [TX_HEADER, tx_row("o1", total_amount="100000000000000"), tx_row("o2")]
    write(settings.landing_dir, "transactions/t.csv", "\n".join(rows) + "\n")
    ingest.load_source("transactions")
    assert [r for _, r in reasons(settings, "transactions/t.csv")] == [
        "amount out of range in total_amount: 100000000000000 (must be below 1e+12)"
    ]
    assert query(settings, "select order_id from raw.transactions_orders") == [("o2",)]


def test_json_oddities_are_quarantined_or_coerced(settings: Settings) -> None:
    lines = [
        '{"messageId": "m1", "type": "track", "timestamp": "2024-03-01T10:00:00Z",}',
        '{"messageId": "m2", "type": "track", "timestamp": "2024-03-01T10:00:00Z", "x": NaN}',
        event(123),  # 3: integer -> its text (documented coercion)
        event(True),  # 4
        event(["m5"]),  # 5
        event("m6", anonymousId={"id": "a"}),  # 6
        event("m7", context="mobile"),  # 7
        event("m8", properties={"note": "NaN, [1,]"}),  # 8: only looks lenient
        event("m9", userId=42),  # 9: integer -> text
        event(1.5),  # 10: a number -> its text
        event("true"),  # 11: a string that reads like a boolean is still a string
    ]
    write(settings.landing_dir, "analytics/e.jsonl", "\n".join(lines) + "\n")
    ingest.load_source("analytics")
    got = dict(reasons(settings, "analytics/e.jsonl"))
    assert got[2].startswith("invalid JSON") and "NaN" in got[2]
    assert got[4] == "invalid messageId: expected a string, got boolean"
    assert got[5] == "invalid messageId: expected a string, got array"
    assert got[6] == "invalid anonymousId: expected a string, got object"
    assert got[7] == "invalid context: expected an object, got varchar"
    assert sorted(got) == [2, 4, 5, 6, 7]
    loaded = query(
        settings, "select _line_number, message_id, user_id from raw.analytics_events order by 1"
    )
    # A trailing comma is a documented coercion (read as if absent).
    assert loaded == [
        (1, "m1", None),
        (3, "123", None),
        (8, "m8", None),
        (9, "m9", "42"),
        (10, "1.5", None),
        (11, "true", None),
    ]


# --------------------------------------------------------------------------- blocking
def test_deep_nesting_and_bad_names_do_not_block_the_run(settings: Settings) -> None:
    write(settings.landing_dir, "analytics/a_deep.jsonl", "[" * 2000 + "\n" + event("ok") + "\n")
    bad_name = corpus.non_utf8_name(settings.landing_dir)
    write(settings.landing_dir, "crm/good.csv", f"{CRM_HEADER}\n{crm_row('c1')}\n")
    analytics = ingest.load_source("analytics")
    crm = ingest.load_source("crm")
    assert analytics.rows_loaded == 1
    assert [n for n, _ in reasons(settings, "analytics/a_deep.jsonl")] == [1]
    assert {f.status for f in crm.files} == {"refused", "loaded"}
    refused = next(f for f in crm.files if f.status == "refused")
    assert refused.source_file == "crm/contacts_\\xff\\xfe.csv"
    assert "not valid UTF-8" in (refused.reason or "")
    assert os.path.exists(bad_name)
    # The next run is not blocked and does not record the refusal again.
    assert ingest.load_source("crm").files == []


# --------------------------------------------------------------------------- leaks
def test_symlinks_subdirectories_and_fifos_are_refused(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text(f"{CRM_HEADER}\n{crm_row('c666')}\n")
    (settings.landing_dir / "analytics").mkdir()
    (settings.landing_dir / "crm").mkdir()
    os.symlink("/etc/passwd", settings.landing_dir / "analytics" / "passwd.jsonl")
    os.symlink(outside, settings.landing_dir / "crm" / "linked.csv")
    (settings.landing_dir / "crm" / "nested").mkdir()
    os.mkfifo(settings.landing_dir / "crm" / "pipe.csv")
    write(settings.landing_dir, "crm/real.csv", f"{CRM_HEADER}\n{crm_row('c1')}\n")

    crm = ingest.load_source("crm")
    analytics = ingest.load_source("analytics")

    statuses = {f.source_file: (f.status, f.reason) for f in crm.files + analytics.files}
    assert statuses["crm/real.csv"][0] == "loaded"
    for rel, kind in [
        ("analytics/passwd.jsonl", "symbolic link"),
        ("crm/linked.csv", "symbolic link"),
        ("crm/nested", "sub-directory"),
        ("crm/pipe.csv", "FIFO"),
    ]:
        status, reason = statuses[rel]
        assert status == "refused" and (reason or "").startswith(kind), (rel, reason)
        assert manifest_row(settings, rel)[0] == "refused"
    assert query(settings, "select contact_id from raw.crm_contacts") == [("c1",)]
    text = repr(query(settings, "select * from audit.quarantine"))
    assert "root:" not in text and "c666" not in text


def test_file_names_cannot_forge_log_lines(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    rel = "crm/x\nERROR segment_pipeline FAILED run.csv"
    write(settings.landing_dir, rel, f"{CRM_HEADER}\n{crm_row('c1')}\nbad\n")
    with caplog.at_level(logging.INFO, logger="segment_warehouse.ingest"):
        summary = ingest.load_source("crm")
    assert summary.files[0].source_file == rel  # the manifest keeps the real name
    messages = [r.getMessage() for r in caplog.records]
    assert messages and all("\n" not in m for m in messages)
    assert any("x\\x0aERROR" in m for m in messages)


# --------------------------------------------------------------------------- bounds
def test_gzip_bomb_is_quarantined_whole_within_the_bound(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest.files, "RATIO_FLOOR_BYTES", 1 << 20)
    corpus.gzip_bomb(settings.landing_dir, "analytics/bomb.jsonl.gz", 24 << 20)
    write(settings.landing_dir, "analytics/ok.jsonl", event("ok") + "\n")
    started = time.perf_counter()
    summary = ingest.load_source("analytics")
    assert time.perf_counter() - started < 20
    by_file = {f.source_file: f for f in summary.files}
    assert by_file["analytics/bomb.jsonl.gz"].status == "file_quarantined"
    assert "gzip bomb" in (by_file["analytics/bomb.jsonl.gz"].reason or "")
    assert by_file["analytics/ok.jsonl"].rows_loaded == 1
    assert query(settings, "select count(*) from raw.analytics_events") == [(1,)]


@pytest.mark.parametrize("rel", ["analytics/flood.jsonl", "crm/flood.csv"])
def test_newline_flood_is_one_quarantine_row(settings: Settings, rel: str) -> None:
    header = "" if rel.endswith(".jsonl") else CRM_HEADER + "\n"
    write(settings.landing_dir, rel, header + "\n" * (4 << 20))
    summary = ingest.load_source(rel.split("/")[0])
    assert [(f.status, f.rows_quarantined) for f in summary.files] == [("file_quarantined", 1)]
    assert len(reasons(settings, rel)) == 1


def test_too_many_bad_rows_quarantine_the_file_whole(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest.files, "MAX_QUARANTINE_ROWS_PER_FILE", 10)
    rows = [TX_HEADER] + [tx_row(f"o{i}", currency="XXX") for i in range(20)]
    write(settings.landing_dir, "transactions/t.csv", "\n".join(rows) + "\n")
    summary = ingest.load_source("transactions")
    assert summary.files[0].status == "file_quarantined"
    assert "more than 10 rows break the contract" in (summary.files[0].reason or "")
    assert query(settings, "select count(*) from raw.transactions_orders") == [(0,)]


# --------------------------------------------------------------------------- completeness
def test_file_still_being_written_is_deferred_then_loaded(settings: Settings) -> None:
    path = write(settings.landing_dir, "transactions/t.csv", f"{TX_HEADER}\n{tx_row('o1')}\n")
    stop = threading.Event()

    def keep_writing() -> None:
        with path.open("a") as fh:
            while not stop.is_set():
                fh.write(tx_row("o2", total_amount="1234.50") + "\n")
                fh.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        summary = ingest.load_source("transactions", settle_seconds=0.5)
    finally:
        stop.set()
        writer.join()
    assert summary.files == []
    assert summary.deferred and "still being written" in summary.deferred[0][1]
    old = time.time() - 10
    os.utime(path, (old, old))
    again = ingest.load_source("transactions", settle_seconds=0.5)
    assert again.files[0].status == "loaded"
    amounts = query(settings, "select distinct total_amount from raw.transactions_orders")
    assert sorted(amounts) == [("10.50",), ("1234.50",)]


def test_file_changing_while_read_is_deferred(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(settings.landing_dir, "crm/a.csv", f"{CRM_HEADER}\n{crm_row('c1')}\n")
    real = ingest.csv_reader.load_plain_csv

    def append_meanwhile(*args: Any) -> Any:
        out = real(*args)
        with path.open("a") as fh:
            fh.write(crm_row("c2") + "\n")
        return out

    monkeypatch.setattr(ingest.csv_reader, "load_plain_csv", append_meanwhile)
    summary = ingest.load_source("crm")
    assert summary.files == [] and "changed while it was being read" in summary.deferred[0][1]
    assert query(settings, "select count(*) from raw.crm_contacts") == [(0,)]
    monkeypatch.setattr(ingest.csv_reader, "load_plain_csv", real)
    assert ingest.load_source("crm").rows_loaded == 2


def test_disk_full_says_so_and_where(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    write(settings.landing_dir, "crm/a.csv", f"{CRM_HEADER}\n{crm_row('c1')}\n")

    def full(*args: Any, **kwargs: Any) -> None:
        raise duckdb.IOException(
            'Could not write file "warehouse.duckdb.wal": No space left on device'
        )

    monkeypatch.setattr(ingest.loader, "insert_manifest", full)
    with pytest.raises(ingest.DiskFullError, match="no space left on device") as info:
        ingest.load_source("crm")
    assert str(settings.warehouse_db) in str(info.value)


def test_gz_content_with_plain_name_and_garbage_gzip_do_not_block(settings: Settings) -> None:
    write(settings.landing_dir, "crm/a.csv.gz", b"\x1f\x8b" + os.urandom(200))
    write(settings.landing_dir, "crm/b.csv", gzip.compress(b"contact_id,updated_at\n"))
    write(settings.landing_dir, "crm/c.csv", f"{CRM_HEADER}\n{crm_row('c1')}\n")
    summary = ingest.load_source("crm")
    assert [(f.source_file, f.status) for f in summary.files] == [
        ("crm/a.csv.gz", "file_quarantined"),
        ("crm/b.csv", "file_quarantined"),
        ("crm/c.csv", "loaded"),
    ]
