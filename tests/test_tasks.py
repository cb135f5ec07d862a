"""tasks.dbt_build: when the dbt build must be a full refresh, and when docs are rebuilt.

dbt itself is replaced by a recorder here; the real builds run in
test_dbt_models.py and the end-to-end tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from segment_warehouse import dbt_runner, tasks
from segment_warehouse.dbt_runner import DbtRunResult


@pytest.fixture
def builds(segments_env: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_build(as_of_date: str, *, extra_args: list[str], docs: bool) -> DbtRunResult:
        calls.append({"as_of": as_of_date, "full_refresh": "--full-refresh" in extra_args,
                      "docs": docs})  # fmt: skip
        if docs:
            site = segments_env / "reports" / "dbt_docs"
            site.mkdir(parents=True, exist_ok=True)
            (site / "static_index.html").write_text("<html></html>")
        return DbtRunResult(args=["build"], returncode=0, elapsed_seconds=0.0)

    monkeypatch.setattr(dbt_runner, "build", fake_build)
    return calls


def test_incremental_by_default_full_refresh_after_seed_change_or_backfill(
    builds: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_digest = tasks.dbt_project_digest
    tasks.dbt_build("2026-11-20")
    tasks.dbt_build("2026-11-21")
    assert [b["full_refresh"] for b in builds] == [False, False]

    # new FX rates: staged orders must be re-priced, so rebuild from raw once
    monkeypatch.setattr(
        tasks,
        "dbt_project_digest",
        lambda parts=None, **kw: "new" if parts == ["seeds"] else real_digest(parts, **kw),
    )
    tasks.dbt_build("2026-11-22")
    tasks.dbt_build("2026-11-23")
    assert [b["full_refresh"] for b in builds[2:]] == [True, False]

    tasks.dbt_build("2026-11-01")  # backfill: an older logical date
    assert builds[-1]["full_refresh"] is True


def test_failed_docs_are_retried_on_the_next_build(
    builds: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = dbt_runner.build

    def build_whose_docs_fail(as_of_date: str, *, extra_args: list[str], docs: bool) -> Any:
        return real_build(as_of_date, extra_args=extra_args, docs=False)  # build ok, no docs

    monkeypatch.setattr(dbt_runner, "build", build_whose_docs_fail)
    assert tasks.dbt_build("2026-11-20")["docs_generated"] is False
    monkeypatch.setattr(dbt_runner, "build", real_build)
    assert tasks.dbt_build("2026-11-21")["docs_generated"] is True
    assert builds[-1]["docs"] is True  # asked again: the failed docs were not marked current


def test_docs_only_when_the_project_changed(
    builds: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks.dbt_build("2026-11-20")
    tasks.dbt_build("2026-11-21")
    monkeypatch.setattr(tasks, "dbt_project_digest", lambda parts=None, **kw: f"edited-{parts}")
    tasks.dbt_build("2026-11-22")
    assert [b["docs"] for b in builds] == [True, False, True]


def test_project_hash_sees_changes_in_a_checkout_under_a_logs_folder(
    segments_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from segment_warehouse import config

    checkout = segments_env / "logs" / "target" / "checkout"  # excluded names above the project
    model = checkout / "dbt_project" / "models" / "a.sql"
    model.parent.mkdir(parents=True)
    model.write_text("select 1")
    built = checkout / "dbt_project" / "target" / "compiled.sql"
    built.parent.mkdir(parents=True)
    built.write_text("select 1")
    settings = dataclasses.replace(config.get_settings(), repo_root=checkout)
    monkeypatch.setattr(config, "get_settings", lambda: settings)

    before = tasks.dbt_project_digest()
    built.write_text("select 2")  # dbt's own output inside the project: not the project
    assert tasks.dbt_project_digest() == before
    model.write_text("select 2")
    assert tasks.dbt_project_digest() != before
    assert tasks.dbt_project_digest(["models"]) != tasks.dbt_project_digest(["target"])


def test_build_state_is_kept_in_the_warehouse(builds: list[dict[str, Any]]) -> None:
    from segment_warehouse import state
    from segment_warehouse.config import get_settings

    tasks.request_full_refresh("erasure requests R1", run_id="run-1")
    assert tasks.dbt_build("2026-11-20")["full_refresh"] is True
    assert state.read(state.DBT_LAST_AS_OF_DATE) == "2026-11-20"
    assert state.read(state.DBT_SEEDS_SHA256) == tasks.dbt_project_digest(["seeds"])
    assert state.read(state.FULL_REFRESH_REQUIRED) is None  # the build succeeded
    assert tasks.dbt_build("2026-11-21")["full_refresh"] is False
    wh = get_settings().warehouse_dir
    assert not any((wh / key).exists() for key in state.KEYS)  # no loose state files


def test_full_refresh_request_survives_a_failed_build(
    builds: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from segment_warehouse import state

    tasks.request_full_refresh("erasure requests R1")

    def failing_build(as_of_date: str, *, extra_args: list[str], docs: bool) -> DbtRunResult:
        raise dbt_runner.DbtBuildError(
            "boom", DbtRunResult(args=["build"], returncode=1, elapsed_seconds=0.0)
        )

    monkeypatch.setattr(dbt_runner, "build", failing_build)
    # a failed build is deterministic: reported once, without Airflow retries
    with pytest.raises(AirflowFailException) as failed:
        tasks.dbt_build("2026-11-20")
    assert isinstance(failed.value.__cause__, dbt_runner.DbtBuildError)
    assert state.read(state.FULL_REFRESH_REQUIRED) == "erasure requests R1"
    assert state.read(state.DBT_LAST_AS_OF_DATE) is None


def test_a_full_refresh_build_requests_a_full_validation(builds: list[dict[str, Any]]) -> None:
    """Rebuilt rows (backfill, erasure, seeds) are all new to the row checks."""
    from segment_warehouse import state

    tasks.dbt_build("2026-11-20")
    tasks.dbt_build("2026-11-21")
    with state.connection() as con:
        assert con is not None
        assert state.full_validation_requests(con) == []
    tasks.dbt_build("2026-11-01")  # backfill: a full refresh
    with state.connection() as con:
        assert con is not None
        requests = state.full_validation_requests(con)
    assert len(requests) == 1 and "backfill" in requests[0][1]
