"""Publishing analytics.duckdb: atomic swap, readers never blocked, no raw PII."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from segment_warehouse.config import get_settings
from segment_warehouse.publish import PublishError, publish_snapshot, renew_marts_generation
from segment_warehouse.warehouse import ensure_schemas, warehouse


def _seed_marts(n_customers: int) -> None:
    with warehouse() as con:
        ensure_schemas(con)
        con.execute(
            "create or replace table marts.customer_profiles as "
            "select 'cus_' || i as customer_id, i * 1.5 as lifetime_revenue "
            f"from range({n_customers}) t(i)"
        )
        con.execute(
            "create or replace table segments.customer_segments as "
            "select customer_id, 1 as segment_id, 'All' as segment_name, 'r1' as run_id "
            "from marts.customer_profiles"
        )
        con.execute("create or replace table staging.secret as select 'a@b.com' as email")


def test_publishes_marts_and_segments_only(segments_env: Path) -> None:
    _seed_marts(10)
    result = publish_snapshot(run_id="run-1")
    assert result.tables == {"marts.customer_profiles": 10, "segments.customer_segments": 10}
    con = duckdb.connect(str(get_settings().analytics_db), read_only=True)
    schemas = {
        r[0]
        for r in con.execute(
            "select distinct table_schema from information_schema.tables"
        ).fetchall()
    }
    assert schemas == {"marts", "segments", "meta"}
    assert con.execute("select run_id from meta.snapshot_info").fetchone() == ("run-1",)
    con.close()
    # no temporary files left behind
    assert sorted(p.name for p in get_settings().warehouse_dir.iterdir()) == [
        "analytics.duckdb",
        "warehouse.duckdb",
    ]


def test_reader_keeps_consistent_old_snapshot_during_publish(segments_env: Path) -> None:
    _seed_marts(5)
    publish_snapshot(run_id="old")
    reader = duckdb.connect(str(get_settings().analytics_db), read_only=True)
    assert reader.execute("select count(*) from marts.customer_profiles").fetchone() == (5,)

    _seed_marts(7)  # the pipeline writes while the reader is connected
    publish_snapshot(run_id="new")

    # the open reader still sees the complete old state ...
    assert reader.execute("select count(*) from marts.customer_profiles").fetchone() == (5,)
    assert reader.execute("select count(*) from segments.customer_segments").fetchone() == (5,)
    reader.close()
    # ... and a new reader sees the complete new one
    fresh = duckdb.connect(str(get_settings().analytics_db), read_only=True)
    assert fresh.execute("select count(*) from marts.customer_profiles").fetchone() == (7,)
    assert fresh.execute("select run_id from meta.snapshot_info").fetchone() == ("new",)
    fresh.close()


def test_failed_publish_keeps_previous_snapshot(segments_env: Path) -> None:
    _seed_marts(3)
    publish_snapshot(run_id="good")
    before = get_settings().analytics_db.read_bytes()
    with warehouse() as con:
        con.execute("create table marts.leaky as select 'x@y.com' as email")
    with pytest.raises(PublishError, match=r"marts\.leaky\.email"):
        publish_snapshot(run_id="bad")
    assert get_settings().analytics_db.read_bytes() == before
    assert not list(get_settings().warehouse_dir.glob(".*.tmp"))


def test_nothing_to_publish_is_an_error(segments_env: Path) -> None:
    with warehouse() as con:
        ensure_schemas(con)
    with pytest.raises(PublishError, match="no marts"):
        publish_snapshot()
    assert not get_settings().analytics_db.exists()


def _snapshot(query: str) -> list[tuple]:
    con = duckdb.connect(str(get_settings().analytics_db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_segments_only_publish_carries_marts_over_only_while_they_are_current(
    segments_env: Path,
) -> None:
    renew_marts_generation()
    _seed_marts(4)
    publish_snapshot(run_id="pipeline")
    with warehouse() as con:
        con.execute("update segments.customer_segments set segment_name = 'New'")
    publish_snapshot(run_id="recluster", refresh=["segments"])
    assert _snapshot("select rewritten from meta.snapshot_info") == [(["segments"],)]
    assert _snapshot("select distinct segment_name from segments.customer_segments") == [("New",)]
    assert _snapshot("select count(*) from marts.customer_profiles") == [(4,)]

    # marts changed since that snapshot (dbt or erasure renewed the generation):
    # a segments-only publish must not keep the stale marts
    renew_marts_generation()
    with warehouse() as con:
        con.execute("delete from marts.customer_profiles where customer_id = 'cus_0'")
    publish_snapshot(run_id="recluster-2", refresh=["segments"])
    assert _snapshot("select rewritten from meta.snapshot_info") == [
        (["marts", "personalisation", "segments"],)
    ]
    assert _snapshot("select count(*) from marts.customer_profiles") == [(3,)]


@pytest.mark.parametrize(
    "leak",
    [
        "https://shop.example/welcome?utm_medium=email&email=jane.doe%40mail.com",
        "https://shop.example/welcome?utm_medium=email&email=jane.doe@mail.com",
        "call +14155550100 today",
        "(415) 555-0100",
    ],
)
def test_values_that_look_like_contact_details_block_publish(segments_env: Path, leak: str) -> None:
    _seed_marts(3)
    publish_snapshot(run_id="clean")
    with warehouse() as con:
        con.execute(
            "create or replace table marts.fct_sessions as "
            "select 'cus_0' as customer_id, ?::varchar as page_url",
            [leak.replace("%40", "@")],
        )
    with pytest.raises(PublishError, match=r"marts\.fct_sessions\.page_url"):
        publish_snapshot(run_id="leaky")
    # the previous snapshot stays, and no temp file is left behind
    assert _snapshot("select run_id from meta.snapshot_info") == [("clean",)]
    assert not list(get_settings().warehouse_dir.glob(".analytics.duckdb.*"))


def test_ordinary_text_is_not_mistaken_for_contact_details(segments_env: Path) -> None:
    _seed_marts(3)
    with warehouse() as con:
        con.execute(
            "create or replace table marts.fct_sessions as select * from (values "
            "('cus_0', 'https://shop.example/p/sku-123?utm_source=newsletter', "
            "'manual__2026-12-01T20:50:52.123456+00:00', '2026-11-01 10:00:00', "
            "'9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08')"
            ") t(customer_id, page_url, run_id, ts_text, email_hash)"
        )
    publish_snapshot(run_id="ok")
    assert _snapshot("select count(*) from marts.fct_sessions") == [(1,)]


def test_publish_removes_temp_files_of_a_crashed_publish(segments_env: Path) -> None:
    _seed_marts(2)
    wh_dir = get_settings().warehouse_dir
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    stale = [
        wh_dir / f".analytics.duckdb.{dead_pid}.tmp",
        wh_dir / f".analytics.duckdb.{dead_pid}.tmp.wal",
    ]
    for path in stale:
        path.write_text("cus_0 left behind")
    publish_snapshot(run_id="after-crash")
    assert not any(path.exists() for path in stale)


def test_snapshot_says_whether_segments_belong_to_its_marts(segments_env: Path) -> None:
    """segment_pipeline publishes new marts before the recluster DAG has caught up."""
    from segment_warehouse import state

    renew_marts_generation()
    _seed_marts(3)
    publish_snapshot(run_id="pipeline-1")
    assert _snapshot("select segments_current from meta.snapshot_info") == [(False,)]
    # the recluster DAG computed segments from these marts
    state.write(state.SEGMENTS_MARTS_GENERATION, state.read(state.MARTS_GENERATION))
    publish_snapshot(run_id="recluster-1", refresh=["segments", "personalisation"])
    assert _snapshot("select segments_current from meta.snapshot_info") == [(True,)]
    # the next dbt build renews the marts: until reclustering, segments are stale
    renew_marts_generation()
    publish_snapshot(run_id="pipeline-2")
    assert _snapshot("select segments_current from meta.snapshot_info") == [(False,)]
