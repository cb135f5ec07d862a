"""Erasure reaches the Spark engine's Parquet copies (spark.erasure), without pyspark.

The files are what a Spark build leaves under <warehouse_dir>/spark, written here
by DuckDB: the raw hand-off, a dbt-spark table (with a Hadoop checksum and a
partition directory) and an export. The Spark-written round trip is
tests/spark/test_spark_erasure.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest
from test_erasure import _build

from segment_warehouse.config import get_settings
from segment_warehouse.erasure import apply_erasure_requests
from segment_warehouse.spark.session import spark_dir
from segment_warehouse.warehouse import warehouse


def _write(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"copy ({query}) to '{path.as_posix()}' (format parquet)")
    return path


def _rows(path: Path) -> list[tuple]:
    con = duckdb.connect()
    try:
        return con.execute(
            f"select * from read_parquet('{path.as_posix()}', hive_partitioning = false) "
            "order by all"
        ).fetchall()
    finally:
        con.close()


@pytest.fixture
def spark_files(segments_env: Path) -> dict[str, Path]:
    with warehouse() as con:
        _build(con)
    root = spark_dir(get_settings())
    con = duckdb.connect()
    files = {
        "raw_crm": _write(
            con,
            "select * from (values ('C1', ' Alice@Example.com ', '+14155550100', 'b1'), "
            "('C10', 'bob@example.com', '+14155550111', 'b1')) "
            "t(contact_id, email, phone, _batch_id)",
            root / "raw_parquet/raw/crm_contacts/batch-aaa.parquet",
        ),
        "raw_events": _write(
            con,
            "select * from (values ('m3', 'anon-b', null, '{\"email\": \"alice@example.com\"}'), "
            "('m4', 'anon-c', 'C10', '{}')) t(message_id, anonymous_id, user_id, traits)",
            root / "raw_parquet/raw/analytics_events/batch-bbb.parquet",
        ),
        "untouched": _write(
            con,
            "select 'C10' as contact_id, 'bob@example.com' as email",
            root / "raw_parquet/raw/crm_contacts/batch-ccc.parquet",
        ),
        "staging": _write(
            con,
            "select * from (values ('C1', 'alice@example.com', timestamptz "
            "'2026-01-01 10:00:00+00', 1.5::decimal(18, 4)), ('C10', 'bob@example.com', "
            "timestamptz '2026-01-02 10:00:00+00', 2.5::decimal(18, 4))) "
            "t(contact_id, email, seen_at, amount)",
            root / "warehouse/staging.db/stg_crm__contacts/part-00000.parquet",
        ),
        "partitioned": _write(
            con,
            "select * from (values ('cus_a', 10.0), ('cus_b', 5.0)) t(customer_id, revenue)",
            root / "warehouse/marts.db/customer_profiles/bucket=3/part-00000.parquet",
        ),
        "export": _write(
            con,
            "select * from (values ('crm', 'C2', 'cus_a'), ('crm', 'C10', 'cus_b')) "
            "t(source, source_id, customer_id)",
            root / "built_parquet/marts/identity_map/part-00000.parquet",
        ),
    }
    con.close()
    crc = files["staging"].with_name(".part-00000.parquet.crc")
    crc.write_bytes(b"crc")
    files["crc"] = crc
    return files


def test_erasure_rewrites_the_files_holding_the_person_and_only_those(
    spark_files: dict[str, Path],
) -> None:
    untouched = os.stat(spark_files["untouched"])
    summary = apply_erasure_requests(run_id="r1")
    assert summary.requests_processed == 1
    assert summary.spark_files_rewritten == 5 and not summary.spark_files_dropped

    assert _rows(spark_files["raw_crm"]) == [("C10", "bob@example.com", "+14155550111", "b1")]
    assert _rows(spark_files["raw_events"]) == [("m4", "anon-c", "C10", "{}")]
    staging = _rows(spark_files["staging"])
    assert [r[:2] for r in staging] == [("C10", "bob@example.com")]
    # column types survive the rewrite; the partition column stays in the path
    con = duckdb.connect()
    described = con.execute(
        f"describe select * from read_parquet('{spark_files['staging'].as_posix()}')"
    ).fetchall()
    assert [(r[0], r[1]) for r in described] == [
        ("contact_id", "VARCHAR"),
        ("email", "VARCHAR"),
        ("seen_at", "TIMESTAMP WITH TIME ZONE"),
        ("amount", "DECIMAL(18,4)"),
    ]
    con.close()
    assert not spark_files["crc"].exists()  # Spark would reject the rewrite against it
    assert _rows(spark_files["partitioned"]) == [("cus_b", 5.0)]
    assert _rows(spark_files["export"]) == [("crm", "C10", "cus_b")]

    after = os.stat(spark_files["untouched"])
    assert (after.st_ino, after.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)
    root = spark_dir(get_settings())
    everything = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    for value in (b"alice", b"Alice", b"cus_a", b"anon-b"):
        assert value not in everything
    assert not list(root.rglob(".*.tmp"))


def test_an_interrupted_erasure_drops_the_spark_dir(spark_files: dict[str, Path]) -> None:
    """Committed, then stopped before its files were rewritten: on the next call the
    people are no longer known, so the derived Spark data goes whole."""
    settings = get_settings()
    apply_erasure_requests(run_id="r1")
    root = spark_dir(settings)
    assert root.is_dir()
    marker = settings.warehouse_db.with_name(settings.warehouse_db.name + ".rewrite-pending")
    marker.touch()  # as a crash after the commit leaves it
    summary = apply_erasure_requests(run_id="r2")
    assert summary.requests_processed == 0 and summary.spark_files_dropped
    assert not root.exists() and not marker.exists()


def test_no_spark_dir_no_work(segments_env: Path) -> None:
    with warehouse() as con:
        _build(con)
    summary = apply_erasure_requests(run_id="r1")
    assert summary.requests_processed == 1
    assert summary.spark_files_rewritten == 0 and not summary.spark_files_dropped
