"""SEGMENTS_PUBLISH_FORMAT=parquet: views over versioned Parquet snapshot directories."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from segment_warehouse.config import ConfigError, get_settings
from segment_warehouse.erasure import apply_erasure_requests
from segment_warehouse.publish import (
    PublishError,
    collect_snapshot_dirs,
    publish_snapshot,
    renew_marts_generation,
    snapshot_root,
)
from segment_warehouse.warehouse import ensure_schemas, warehouse


@pytest.fixture
def parquet_env(segments_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # a quote and glob characters in the path: views must still read exactly these files
    wh = segments_env / "o'brien [1]*"
    wh.mkdir()
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(wh))
    monkeypatch.setenv("SEGMENTS_PUBLISH_FORMAT", "parquet")
    return wh


def _seed(n: int) -> None:
    with warehouse() as con:
        ensure_schemas(con)
        con.execute(
            "create or replace table marts.customer_profiles as select 'cus_' || i as customer_id, "
            "(i * 1.5)::decimal(18, 4) as lifetime_revenue, i::hugeint * 10000000000000000000 "
            "as big, (case when i % 2 = 0 then 'a' else 'b' end)::enum('a', 'b') as tier, "
            "timestamptz '2026-01-01 00:00:00+00' as seen_at, [i, i + 1] as xs "
            f"from range({n}) t(i)"
        )
        con.execute(
            "create or replace table segments.customer_segments as select customer_id, "
            "1 as segment_id from marts.customer_profiles"
        )


def _read(query: str) -> list[tuple]:
    con = duckdb.connect(str(get_settings().analytics_db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _dirs() -> list[Path]:
    return sorted(p for p in snapshot_root(get_settings()).iterdir() if p.is_dir())


def test_views_match_tables_and_read_from_any_directory(
    parquet_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(5)
    result = publish_snapshot(run_id="p1")
    assert result.tables == {"marts.customer_profiles": 5, "segments.customer_segments": 5}
    assert _read(
        "select table_schema, table_name, table_type from information_schema.tables "
        "where table_schema <> 'meta' order by 1"
    ) == [("marts", "customer_profiles", "VIEW"), ("segments", "customer_segments", "VIEW")]
    fmt, directory = _read("select format, snapshot_dir from meta.snapshot_info")[0]
    assert fmt == "parquet" and Path(directory).parent == snapshot_root(get_settings())
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    with warehouse(read_only=True) as con:
        want_types = con.execute("describe marts.customer_profiles").fetchall()
        want_rows = con.execute("select * from marts.customer_profiles order by 1").fetchall()
    assert _read("describe marts.customer_profiles") == want_types  # HUGEINT, ENUM kept
    assert _read("select * from marts.customer_profiles order by 1") == want_rows


def test_refresh_reuses_unchanged_files_and_swap_keeps_old_readers(parquet_env: Path) -> None:
    renew_marts_generation()
    _seed(4)
    publish_snapshot(run_id="full")
    (first,) = _dirs()
    marts_file = first / "marts" / "customer_profiles" / "part-00000.parquet"
    reader = duckdb.connect(str(get_settings().analytics_db), read_only=True)
    with warehouse() as con:
        con.execute("update segments.customer_segments set segment_id = 2")
    publish_snapshot(run_id="seg", refresh=["segments"])
    second = _dirs()[-1]
    reused = second / "marts" / "customer_profiles" / "part-00000.parquet"
    assert os.stat(reused).st_ino == os.stat(marts_file).st_ino  # a hard link, not a rewrite
    rewritten = second / "segments" / "customer_segments" / "part-00000.parquet"
    old_seg = first / "segments" / "customer_segments" / "part-00000.parquet"
    assert os.stat(rewritten).st_ino != os.stat(old_seg).st_ino
    # the reader of the old file still sees the old, complete snapshot (grace period)
    assert reader.execute(
        "select distinct segment_id from segments.customer_segments"
    ).fetchall() == [(1,)]
    # closed first: while it is open, DuckDB's instance cache hands a new connection
    # to the same path the old database, not the file swapped in
    reader.close()
    assert _read("select rewritten from meta.snapshot_info") == [(["segments"],)]
    assert _read("select distinct segment_id from segments.customer_segments") == [(2,)]
    assert not list(get_settings().warehouse_dir.glob(".analytics.duckdb.*"))


def test_gc_keeps_previous_within_grace_then_removes(parquet_env: Path) -> None:
    _seed(2)
    for run in ("a", "b", "c"):
        publish_snapshot(run_id=run)
    assert len(_dirs()) == 3  # all superseded less than the grace period ago
    current = Path(_read("select snapshot_dir from meta.snapshot_info")[0][0])
    later = datetime.now(UTC) + timedelta(hours=2)
    removed = collect_snapshot_dirs(get_settings(), keep=current, now=later)
    assert len(removed) == 2 and _dirs() == [current]
    assert _read("select count(*) from marts.customer_profiles") == [(2,)]


def test_failed_publish_leaves_no_directory_and_keeps_snapshot(parquet_env: Path) -> None:
    _seed(2)
    publish_snapshot(run_id="good")
    before = _dirs()
    with warehouse() as con:
        con.execute("create table marts.leaky as select 'x@y.com' as email")
    with pytest.raises(PublishError, match=r"marts\.leaky\.email"):
        publish_snapshot(run_id="bad")
    assert _dirs() == before
    assert _read("select run_id from meta.snapshot_info") == [("good",)]


def test_nothing_to_publish(parquet_env: Path) -> None:
    with warehouse() as con:
        ensure_schemas(con)
    with pytest.raises(PublishError, match="no marts"):
        publish_snapshot()
    assert not get_settings().analytics_db.exists()


def test_erasure_leaves_the_person_in_no_parquet_file(parquet_env: Path) -> None:
    with warehouse() as con:
        ensure_schemas(con)
        con.execute(
            "create table raw.crm_contacts as select * from (values "
            "('C1', 'alice@example.com', null), ('C9', 'bob@example.com', null)) "
            "t(contact_id, email, phone)"
        )
        con.execute(
            "create table marts.identity_map as select * from (values "
            "('crm', 'C1', 'cus_alice'), ('crm', 'C9', 'cus_bob')) "
            "t(source, source_id, customer_id)"
        )
        con.execute(
            "create table marts.customer_profiles as select * from (values "
            "('cus_alice', 1.0), ('cus_bob', 2.0)) t(customer_id, lifetime_revenue)"
        )
    publish_snapshot(run_id="before-1")
    publish_snapshot(run_id="before-2")
    assert len(_dirs()) == 2
    with warehouse() as con:
        con.execute(
            "create table raw.erasure_requests as select * from (values "
            "('R1', 'C1', null, '2026-11-01T00:00:00Z')) "
            "t(request_id, contact_id, email, requested_at)"
        )
    published = Path(_read("select snapshot_dir from meta.snapshot_info")[0][0])
    apply_erasure_requests(run_id="erase")
    # the erasure removes at once every directory no published snapshot reads...
    assert _dirs() == [published]
    publish_snapshot(run_id="after")
    # ...and the next publish, rebuilt without the person, the one that was published
    (only,) = _dirs()
    assert only != published
    files = list(snapshot_root(get_settings()).rglob("*.parquet"))
    assert files
    con = duckdb.connect()
    for f in files:
        assert b"cus_alice" not in f.read_bytes()
        rows = con.execute("select * from read_parquet(?)", [str(f)]).fetchall()
        assert "cus_alice" not in repr(rows)
    assert _read("select customer_id from marts.customer_profiles") == [("cus_bob",)]


def test_publish_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENTS_PUBLISH_FORMAT", raising=False)
    monkeypatch.delenv("SEGMENTS_ENGINE", raising=False)
    assert get_settings().publish_format == "duckdb"
    monkeypatch.setenv("SEGMENTS_PUBLISH_FORMAT", " Parquet ")
    assert get_settings().publish_format == "parquet"
    monkeypatch.setenv("SEGMENTS_PUBLISH_FORMAT", "csv")
    with pytest.raises(ConfigError, match="SEGMENTS_PUBLISH_FORMAT must be one of duckdb, parquet"):
        get_settings()
