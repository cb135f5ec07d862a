"""audit.pipeline_state: one owner for the state stages leave each other."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from segment_warehouse import state
from segment_warehouse.config import get_settings
from segment_warehouse.warehouse import warehouse


def test_put_get_delete_and_upsert(segments_env: Path) -> None:
    with warehouse() as con:
        assert state.get(con, state.DBT_LAST_AS_OF_DATE) is None  # no table yet
        state.put(con, state.DBT_LAST_AS_OF_DATE, "2026-11-20", run_id="r1")
        state.put(con, state.DBT_LAST_AS_OF_DATE, "2026-11-21", run_id="r2")
        assert state.get(con, state.DBT_LAST_AS_OF_DATE) == "2026-11-21"
        assert con.execute(
            "select count(*), max(run_id) from audit.pipeline_state"
        ).fetchone() == (1, "r2")
        state.delete(con, state.DBT_LAST_AS_OF_DATE)
        assert state.get(con, state.DBT_LAST_AS_OF_DATE) is None


def test_state_commits_and_rolls_back_with_the_data(segments_env: Path) -> None:
    with warehouse() as con:
        state.ensure_state_table(con)
        con.execute("create table main.facts (x int)")
        con.execute("begin transaction")
        con.execute("insert into main.facts values (1)")
        state.renew_marts_generation(con, run_id="failed-run")
        con.execute("rollback")
        assert state.get(con, state.MARTS_GENERATION) is None
        assert con.execute("select count(*) from main.facts").fetchone() == (0,)
        con.execute("begin transaction")
        con.execute("insert into main.facts values (1)")
        token = state.renew_marts_generation(con)
        con.execute("commit")
    assert state.read(state.MARTS_GENERATION) == token


def test_a_dbt_build_record_carries_the_marts_generation_it_left(segments_env: Path) -> None:
    with warehouse() as con:
        assert state.last_dbt_build(con) is None
        token = state.renew_marts_generation(con)
        state.record_dbt_build(con, "f1", {"project": "p1"}, run_id="r1")
        doc = state.last_dbt_build(con)
        assert doc is not None
        assert (doc["fingerprint"], doc["parts"], doc["run_id"]) == ("f1", {"project": "p1"}, "r1")
        assert doc["marts_generation"] == token
        state.put(con, state.DBT_LAST_BUILD, "{not json")
        assert state.last_dbt_build(con) is None  # unreadable: as if none, the next build runs


def test_full_refresh_reasons_accumulate_once_each(segments_env: Path) -> None:
    with warehouse() as con:
        state.request_full_refresh(con, "erasure requests R1")
        state.request_full_refresh(con, "erasure requests R2\nwith a newline")
        state.request_full_refresh(con, "erasure requests R1")
        assert state.full_refresh_reasons(con) == [
            "erasure requests R1",
            "erasure requests R2 with a newline",
        ]


def test_legacy_state_files_move_into_the_table(segments_env: Path) -> None:
    wh = get_settings().warehouse_dir
    with warehouse() as con:
        state.put(con, state.MARTS_GENERATION, "from-the-table")
    (wh / "marts_generation").write_text("from-a-file")
    (wh / "dbt_last_as_of_date").write_text("2026-11-19\n")
    (wh / "dbt_full_refresh_required").write_text("erasure requests R9\n")
    assert state.read(state.DBT_LAST_AS_OF_DATE) == "2026-11-19"
    assert state.read(state.MARTS_GENERATION) == "from-the-table"  # the table is newer
    assert state.read(state.FULL_REFRESH_REQUIRED) == "erasure requests R9"
    assert not any((wh / key).exists() for key in state.KEYS)


def test_read_does_not_create_a_warehouse(segments_env: Path) -> None:
    assert state.read(state.DBT_LAST_AS_OF_DATE) is None
    assert not get_settings().warehouse_db.exists()


def test_resolve_as_of_date(segments_env: Path) -> None:
    today = date(2026, 12, 1)
    assert state.resolve_as_of_date("2026-11-05", today=today) == "2026-11-05"
    # no ds (an Asset-triggered run), no build recorded: today (UTC)
    assert state.resolve_as_of_date(None, today=today) == "2026-12-01"
    with warehouse() as con:
        state.ensure_state_table(con)
    assert state.resolve_as_of_date(None, today=today) == "2026-12-01"
    # after a backfill the last successful build was for an older date: that one
    state.write(state.DBT_LAST_AS_OF_DATE, "2026-10-31", run_id="backfill")
    assert state.resolve_as_of_date(None, today=today) == "2026-10-31"
    assert state.resolve_as_of_date("", today=today) == "2026-10-31"
    assert state.resolve_as_of_date("2026-11-05", today=today) == "2026-11-05"
    for bad in ("2026-13-01", "yesterday", "2026-11-05'; drop table x"):
        with pytest.raises(ValueError, match="date YYYY-MM-DD"):
            state.resolve_as_of_date(bad)


def test_as_of_date_of_an_asset_triggered_run(segments_env: Path) -> None:
    """No ds, landing events: the newest event's UTC date, never before the last build."""
    from datetime import UTC, datetime, timedelta, timezone

    today = date(2026, 12, 1)
    at = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    # one event, nothing built yet
    assert state.resolve_as_of_date(None, event_times=[at], today=today) == "2026-12-03"
    # the UTC date, whatever the timestamp's zone (23:30 in New York is the next day)
    ny = datetime(2026, 12, 3, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert state.resolve_as_of_date(None, event_times=[ny]) == "2026-12-04"
    state.write(state.DBT_LAST_AS_OF_DATE, "2026-12-02", run_id="daily")
    # several coalesced events: the newest one dates the data
    times = [at - timedelta(days=1), at, at - timedelta(hours=30)]
    assert state.resolve_as_of_date(None, event_times=times, today=today) == "2026-12-03"
    # an event for an old backfill file (delivered now, data from 2025; event dated the
    # day before the last build, e.g. it waited behind a run): the date never goes back,
    # which would make the next build a --full-refresh
    old = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    assert state.resolve_as_of_date(None, event_times=[old], today=today) == "2026-12-02"
    # a logical date still wins (a scheduled run or a backfill with landing files)
    assert state.resolve_as_of_date("2026-11-05", event_times=[at]) == "2026-11-05"
    # no events: the last build's date, as for the recluster DAG's runs
    assert state.resolve_as_of_date(None, event_times=[], today=today) == "2026-12-02"


def test_run_as_of_records_the_rule(segments_env: Path) -> None:
    """What segment_pipeline records in its XCom, from Airflow's own accessor of the
    triggering events (what the task context holds)."""
    from datetime import UTC, datetime

    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from segment_warehouse import landing_watch

    def event(uri: str, day: int) -> AssetEventDagRunReferenceResult:
        return AssetEventDagRunReferenceResult(
            asset={"name": uri.split("/")[-1], "uri": uri, "extra": {}},
            extra={"from_trigger": True, "payload": {"file_count": 1}},
            source_task_id=None, source_dag_id=None, source_run_id=None,
            source_map_index=None, source_aliases=[],
            timestamp=datetime(2026, 12, day, 12, tzinfo=UTC),
        )  # fmt: skip

    landing = landing_watch.LANDING_ASSET_URI
    events = TriggeringAssetEventsAccessor.build(
        # only the landing Asset's events date the data
        [event(landing, 4), event(landing, 5), event("duckdb://warehouse/marts/x", 9)]
    )
    assert landing_watch.run_as_of(None, events) == {
        "as_of_date": "2026-12-05",
        "as_of_rule": "newest landing event (UTC), not before the last build",
        "landing_events": 2,
    }
    assert landing_watch.run_as_of("2026-11-30", events)["as_of_date"] == "2026-11-30"
    assert landing_watch.run_as_of(None, {})["as_of_rule"].startswith("last dbt build")
    context = {"run_id": "asset_triggered__x", "triggering_asset_events": events}  # no ds
    assert landing_watch.run_as_of_date(context) == "2026-12-05"


def test_full_validation_is_recorded_per_suite_and_requests_are_dated(segments_env: Path) -> None:
    from datetime import UTC, datetime, timedelta

    at = datetime(2026, 12, 1, 6, tzinfo=UTC)
    with warehouse() as con:
        assert state.last_full_validation(con, "marts") is None
        assert state.full_validation_requests(con) == []
        state.record_full_validation(con, "marts", at, "fp1", run_id="r1")
        assert state.last_full_validation(con, "marts") == (at, "fp1")
        assert state.last_full_validation(con, "segments") is None
        for i in range(state.KEEP_FULL_VALIDATION_REQUESTS + 3):
            state.request_full_validation(con, f"reason {i}", at=at + timedelta(minutes=i))
        requests = state.full_validation_requests(con)
        assert len(requests) == state.KEEP_FULL_VALIDATION_REQUESTS  # bounded, newest kept
        assert requests[-1] == (at + timedelta(minutes=22), "reason 22")
        state.put_validation_watermarks(con, "staging", {"events": at, "orders": at})
        assert state.validation_watermarks(con, "staging") == {"events": at, "orders": at}
        assert state.validation_watermarks(con, "raw_contract") == {}
