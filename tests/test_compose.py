"""docker-compose.yml cannot run here (no Docker engine): check it statically."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segment_warehouse.config import REPO_ROOT

AIRFLOW_SERVICES = {
    "airflow-api-server": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_airflow_3_components_on_postgres(compose: dict) -> None:
    services = compose["services"]
    assert "postgres" in services
    for name, command in AIRFLOW_SERVICES.items():
        svc = services[name]
        assert svc["command"] == [command]
        env = svc["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert "@postgres:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert svc["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    init = " ".join(services["airflow-init"]["command"])
    assert "db migrate" in init and "pools set duckdb_writer 1" in init


def test_image_is_built_from_requirements(compose: dict) -> None:
    build = compose["services"]["airflow-scheduler"]["build"]
    dockerfile = (REPO_ROOT / build["context"] / build["dockerfile"]).read_text()
    assert "COPY requirements.txt" in dockerfile
    assert "pip install -r /tmp/requirements.txt" in dockerfile
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    assert "apache-airflow==" in requirements and "psycopg2-binary==" in requirements


def test_mounts_exist_in_repo_and_match_environment(compose: dict) -> None:
    svc = compose["services"]["airflow-scheduler"]
    mounts = dict(v.split(":", 1) for v in svc["volumes"] if v.startswith("./"))
    for folder in ("dags", "plugins", "dbt_project", "expectations"):
        assert (REPO_ROOT / folder).is_dir(), folder
        assert mounts[f"./{folder}"] == f"/opt/segments/{folder}"
    env = svc["environment"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == mounts["./dags"]
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == mounts["./plugins"]
    for var, host in (
        ("SEGMENTS_LANDING_DIR", "./data/landing"),
        ("SEGMENTS_WAREHOUSE_DIR", "./data/warehouse"),
        ("SEGMENTS_REPORTS_DIR", "./data/reports"),
    ):
        assert mounts[host] == env[var]
    # the plugins mount is where config.REPO_ROOT-relative paths resolve from
    assert Path(mounts["./plugins"]).parent == Path(mounts["./dbt_project"]).parent


def test_secrets_are_required_not_defaulted(compose: dict) -> None:
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["SEGMENTS_PII_KEY"].startswith("${SEGMENTS_PII_KEY:?")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")


def test_decision_api_serves_the_published_snapshot(compose: dict) -> None:
    api = compose["services"]["decision-api"]
    assert api["entrypoint"][-3:] == ["python", "-m", "segment_warehouse.api"]
    assert "8000:8000" in api["ports"]
    mounts = dict(v.split(":", 1) for v in api["volumes"] if v.startswith("./"))
    assert mounts["./data/warehouse"] == api["environment"]["SEGMENTS_WAREHOUSE_DIR"]
    assert (REPO_ROOT / "personalisation" / "content_rules.yml").exists()
    assert mounts["./personalisation"] == str(
        Path(api["environment"]["SEGMENTS_CONTENT_RULES"]).parent
    )


def test_triggerer_sees_the_landing_zone_and_cursor_the_dags_name(compose: dict) -> None:
    """The watcher's trigger gets its paths when the dag-processor parses the DAG and
    runs in the triggerer: both must see the same landing zone and warehouse dir
    (the cursor is written there), mounted read-write."""
    services = compose["services"]

    def paths(name: str) -> tuple[dict[str, str], dict[str, str]]:
        svc = services[name]
        mounts = dict(v.split(":", 1) for v in svc["volumes"] if v.startswith("./"))
        return mounts, svc["environment"]

    parsed_mounts, parsed_env = paths("airflow-dag-processor")
    mounts, env = paths("airflow-triggerer")
    for var, host in (
        ("SEGMENTS_LANDING_DIR", "./data/landing"),
        ("SEGMENTS_WAREHOUSE_DIR", "./data/warehouse"),
    ):
        assert env[var] == parsed_env[var] == mounts[host] == parsed_mounts[host]
        assert not mounts[host].endswith(":ro")
