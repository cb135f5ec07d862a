"""tasks.dbt_build: when the dbt build must be a full refresh, and when docs are rebuilt.

dbt itself is replaced by a recorder here; the real builds run in
test_dbt_models.py and the end-to-end tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
    real_hash = tasks._dbt_project_hash
    tasks.dbt_build("2026-11-20")
    tasks.dbt_build("2026-11-21")
    assert [b["full_refresh"] for b in builds] == [False, False]

    # new FX rates: staged orders must be re-priced, so rebuild from raw once
    monkeypatch.setattr(
        tasks, "_dbt_project_hash", lambda sub="": "new" if sub == "seeds" else real_hash(sub)
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
    monkeypatch.setattr(tasks, "_dbt_project_hash", lambda sub="": f"edited-{sub}")
    tasks.dbt_build("2026-11-22")
    assert [b["docs"] for b in builds] == [True, False, True]
