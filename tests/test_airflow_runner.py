"""The one-process DAG runner behind `make run`."""

from __future__ import annotations

from segment_warehouse import airflow_runner


def test_cosmos_telemetry_is_off_unless_configured() -> None:
    """Cosmos would send a request per dbt task to an outside endpoint; an explicit
    setting still wins."""
    env: dict[str, str] = {}
    airflow_runner.quiet_cosmos_telemetry(env)
    assert env == {"AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False"}
    env = {"AIRFLOW__COSMOS__ENABLE_TELEMETRY": "True"}
    airflow_runner.quiet_cosmos_telemetry(env)
    assert env == {"AIRFLOW__COSMOS__ENABLE_TELEMETRY": "True"}
