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
