"""Deterministic failures fail the task without retries; transient ones are retried."""

from __future__ import annotations

import duckdb
import pytest
from airflow.sdk.exceptions import AirflowFailException

from segment_warehouse import failures
from segment_warehouse.config import ConfigError
from segment_warehouse.dbt_runner import DbtBuildError, DbtRunResult, NodeResult


def _duckdb_oom() -> duckdb.Error:
    con = duckdb.connect()
    con.execute("set memory_limit = '2MB'")
    con.execute("set threads = 1")
    try:
        con.execute("select md5(i::varchar) m from range(2000000) t(i) order by m").fetchall()
    except duckdb.Error as exc:
        return exc
    finally:
        con.close()
    raise AssertionError("expected DuckDB to run out of memory")


def _dbt_error(message: str, *, returncode: int = 1, node_status: str = "error") -> DbtBuildError:
    node = NodeResult("model.segment_warehouse.fct_orders", node_status, 1.0, message)
    return DbtBuildError(
        f"dbt build failed (exit {returncode})",
        DbtRunResult(args=["build"], returncode=returncode, elapsed_seconds=1.0, nodes=[node]),
    )


def test_duckdb_out_of_memory_is_deterministic_directly_and_inside_dbt() -> None:
    oom = _duckdb_oom()
    assert "memory" in (failures.deterministic_reason(oom) or "")
    wrapped = _dbt_error(str(oom))  # how dbt reports DuckDB's error for a model
    assert "SEGMENTS_DUCKDB_MEMORY_LIMIT" in (failures.deterministic_reason(wrapped) or "")
    try:
        raise RuntimeError("stage failed") from oom
    except RuntimeError as chained:
        assert failures.deterministic_reason(chained) is not None


def test_failed_dbt_nodes_and_config_are_deterministic() -> None:
    assert failures.deterministic_reason(_dbt_error("Got 3 results, configured to fail if != 0"))
    assert failures.deterministic_reason(ConfigError("SEGMENTS_PII_KEY is not set"))


def test_locks_killed_processes_and_unknown_errors_are_retried() -> None:
    lock = _dbt_error('IO Error: Could not set lock on file "warehouse.duckdb": Conflicting lock')
    assert failures.deterministic_reason(lock) is None
    killed = DbtBuildError(
        "dbt build failed (exit -9)", DbtRunResult(args=["build"], returncode=-9,
                                                   elapsed_seconds=1.0)
    )  # fmt: skip
    assert failures.deterministic_reason(killed) is None
    assert failures.deterministic_reason(ConnectionResetError("reset by peer")) is None


def test_fail_fast_raises_airflow_fail_exception_only_for_deterministic_failures() -> None:
    @failures.fail_fast
    def dbt_build(error: Exception) -> None:
        raise error

    with pytest.raises(AirflowFailException, match="dbt_build: dbt: 1 failed node"):
        dbt_build(_dbt_error("Got 3 results"))
    with pytest.raises(TimeoutError):
        dbt_build(TimeoutError("slow disk"))
