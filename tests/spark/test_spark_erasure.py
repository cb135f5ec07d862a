"""Spark reads and extends a table whose files erasure rewrote (spark.erasure).

Spark writes a partitioned Parquet table (with Hadoop checksums) under the
warehouse's Spark dir, holding an erased person and someone else; after
``apply_erasure_requests`` Spark reads the same schema and the other person's
row, byte for byte, and can append to it. The rewrite itself without Spark:
tests/test_erasure_spark_files.py.

Run with ``make test-spark`` (pytest -m spark); skipped without pyspark.
"""

from __future__ import annotations

import datetime as dt
import decimal
import secrets
from pathlib import Path

import pytest
from test_erasure import _build

from segment_warehouse.config import get_settings
from segment_warehouse.erasure import apply_erasure_requests
from segment_warehouse.warehouse import warehouse

pytestmark = pytest.mark.spark


def test_spark_reads_and_appends_to_a_table_erasure_rewrote(
    segments_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyspark")
    monkeypatch.setenv("SEGMENTS_SPARK_MASTER", "local[1]")
    settings = get_settings()
    with warehouse() as con:
        _build(con)

    from segment_warehouse.spark.session import build_session, spark_dir

    spark = build_session(settings)
    # An explicit location: a session another test module started keeps its own
    # warehouse dir, and the files must be under this warehouse's Spark dir.
    name = f"staging.erasure_{secrets.token_hex(4)}"
    folder = spark_dir(settings) / "warehouse" / "staging.db" / name.split(".")[1]
    spark.sql("create database if not exists staging")
    spark.sql(
        f"create table {name} (contact_id string, email string, seen_at timestamp, "
        "amount decimal(18, 4), tags array<string>, day date, bucket int) "
        f"using parquet partitioned by (bucket) location '{folder.as_posix()}'"
    )
    spark.sql(
        f"insert into {name} values "
        "('C1', 'alice@example.com', timestamp'2026-01-01 10:00:00', 1.5, array('a'), "
        "date'2026-01-01', 1), "
        "('C10', 'bob@example.com', timestamp'2026-01-02 11:30:00.123456', 2.25, "
        "array('b', null), date'2026-01-02', 1), "
        "('C10', 'bob@example.com', timestamp'2026-01-03 12:00:00', null, array(), null, 2)"
    )
    schema = spark.table(name).schema
    bob = sorted(spark.sql(f"select * from {name} where contact_id = 'C10'").collect())
    assert list(folder.rglob(".*.crc"))  # Spark's checksums, which the rewrite must not trip

    summary = apply_erasure_requests(run_id="r1")
    assert summary.spark_files_rewritten == 1  # bucket=1's file; bucket=2 holds only bob

    spark.sql(f"refresh table {name}")
    assert spark.table(name).schema == schema
    assert sorted(spark.table(name).collect()) == bob
    assert all(b"alice" not in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    spark.sql(
        f"insert into {name} values ('C20', 'carol@example.com', "
        "timestamp'2026-02-01 00:00:00', 3.0, array('c'), date'2026-02-01', 1)"
    )
    rows = spark.sql(
        f"select contact_id, amount, day from {name} order by contact_id, amount nulls last"
    ).collect()
    assert [tuple(r) for r in rows] == [
        ("C10", decimal.Decimal("2.2500"), dt.date(2026, 1, 2)),
        ("C10", None, None),
        ("C20", decimal.Decimal("3.0000"), dt.date(2026, 2, 1)),
    ]
    spark.sql(f"drop table {name}")
