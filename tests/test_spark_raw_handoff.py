"""The loaders' raw rows reach Spark one Parquet file per load batch (spark/pipeline.export_raw).

DuckDB only (no pyspark): the hand-off is DuckDB writing Parquet; Spark registers
the folders as tables (tests/spark/test_spark_engine_pipeline.py runs that part).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from landing_rows import CRM_HEADER, TX_HEADER, crm_row, event, tx_row

from segment_warehouse import ingest
from segment_warehouse.config import Settings
from segment_warehouse.spark.pipeline import COLUMNS_FILE, EMPTY_FILE, export_raw


def _land(settings: Settings, rel: str, lines: list[str]) -> None:
    path = settings.landing_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.parquet")}


def _same_rows(settings: Settings, table: str, folder: Path) -> None:
    """The Parquet folder holds exactly raw.<table>'s rows, with the same column types."""
    con = duckdb.connect(str(settings.warehouse_db), read_only=True)
    try:
        glob = (folder / "*.parquet").as_posix().replace("'", "''")
        con.execute(f"create temp view handed as select * from read_parquet('{glob}')")

        def columns(relation: str) -> list[tuple[str, str]]:
            return [(r[0], r[1]) for r in con.execute(f"describe {relation}").fetchall()]

        assert columns("handed") == columns(f"raw.{table}")
        missing = con.execute(f"select * from raw.{table} except all select * from handed")
        extra = con.execute(f"select * from handed except all select * from raw.{table}")
        assert missing.fetchall() == [] and extra.fetchall() == []
    finally:
        con.close()


def _raw(settings: Settings, sql: str) -> None:
    con = duckdb.connect(str(settings.warehouse_db))
    try:
        con.execute(sql)
    finally:
        con.close()


def test_each_build_writes_only_new_batches_and_stays_level_with_duckdb(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "raw_parquet"
    _land(settings, "crm/a.csv", [CRM_HEADER, crm_row("c1"), crm_row("c2")])
    _land(settings, "transactions/a.csv", [TX_HEADER, tx_row("o1")])
    _land(settings, "analytics/a.jsonl", [event("m1"), event("m2")])
    ingest.load_all()
    folders = export_raw(settings, out)
    crm = folders[("raw", "crm_contacts")]
    assert crm == out / "raw" / "crm_contacts"
    for (_, table), folder in folders.items():
        _same_rows(settings, table, folder)
        assert (folder / COLUMNS_FILE).exists()
    first = _files(crm)
    assert len(first) == 1 and next(iter(first)).startswith("batch-")

    # nothing new: nothing rewritten
    export_raw(settings, out)
    assert _files(crm) == first

    # a second delivery is a second batch: one new file, the first untouched
    _land(settings, "crm/b.csv", [CRM_HEADER, crm_row("c3"), crm_row("c1")])
    ingest.load_all()
    export_raw(settings, out)
    second = _files(crm)
    assert len(second) == 2
    assert {name: second[name] for name in first} == first
    _same_rows(settings, "crm_contacts", crm)

    # rows deleted in DuckDB (an erasure the Spark-file rewrite did not reach): that
    # batch's file is written again from DuckDB, the other file stays
    _raw(settings, "delete from raw.crm_contacts where trim(contact_id) = 'c3'")
    export_raw(settings, out)
    third = _files(crm)
    _same_rows(settings, "crm_contacts", crm)
    assert {n for n in third if third[n] == second[n]} == set(first)

    # a batch deleted whole loses its file
    _raw(settings, "delete from raw.crm_contacts where _source_file = 'crm/a.csv'")
    export_raw(settings, out)
    assert len(_files(crm)) == 1
    _same_rows(settings, "crm_contacts", crm)

    # a new column (schema evolution): the table is written afresh
    _raw(settings, "alter table raw.crm_contacts add column loyalty_tier varchar")
    export_raw(settings, out)
    _same_rows(settings, "crm_contacts", crm)

    # every row gone: an empty file keeps the table's columns for Spark
    _raw(settings, "delete from raw.crm_contacts")
    export_raw(settings, out)
    assert set(_files(crm)) == {EMPTY_FILE}
    _same_rows(settings, "crm_contacts", crm)

    # a raw table that no longer exists loses its folder
    _raw(settings, "drop table raw.transactions_orders")
    folders = export_raw(settings, out)
    assert ("raw", "transactions_orders") not in folders
    assert not (out / "raw" / "transactions_orders").exists()


def test_a_folder_in_an_older_layout_is_written_afresh(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "raw_parquet"
    _land(settings, "crm/a.csv", [CRM_HEADER, crm_row("c1")])
    ingest.load_all()
    crm = out / "raw" / "crm_contacts"
    crm.mkdir(parents=True)
    # what the whole-table export of earlier versions left (no column list beside it)
    _raw(
        settings, f"copy raw.crm_contacts to '{(crm / 'data.parquet').as_posix()}' (format parquet)"
    )
    export_raw(settings, out)
    assert not (crm / "data.parquet").exists()
    _same_rows(settings, "crm_contacts", crm)
