"""docker-compose.yml cannot run here (no Docker engine): check it statically."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


def test_no_usage_telemetry_leaves_the_airflow_services(compose: dict) -> None:
    """Cosmos would send one request per dbt task to an outside endpoint."""
    for name, svc in _resolve(compose, {"celery"}).items():
        if name.startswith("airflow"):
            assert svc["environment"]["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] == "False", name


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


# --- the CeleryExecutor profile -------------------------------------------------

DEFAULT_SERVICES = {"postgres", "airflow-init", *AIRFLOW_SERVICES, "decision-api"}
CELERY_SERVICES = {"redis", "airflow-worker", "flower"}
# What the Celery profile adds to the always-on services: keys only the Celery
# provider reads, and the image build argument (its default installs nothing).
INERT_CELERY_ENV = {"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"}
REQUIRED_SECRETS = {"SEGMENTS_PII_KEY": "k" * 64, "AIRFLOW_JWT_SECRET": "j" * 64}

_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (the forms this file uses)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            return current if current else (arg or "")
        if op in (":?", "?"):
            if not current:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _VAR.sub(sub, value)


def _resolve(compose: dict, profiles: set[str], **env: str) -> dict[str, dict]:
    """The services `docker compose [--profile ...] up` would start, interpolated."""
    resolved = _interpolate(copy.deepcopy(compose), {**REQUIRED_SECRETS, **env})
    return {
        name: svc
        for name, svc in resolved["services"].items()
        if not svc.get("profiles") or profiles & set(svc["profiles"])
    }


def test_default_stack_is_the_local_executor_one(compose: dict) -> None:
    """Without the profile (and without AIRFLOW_EXECUTOR) nothing of Celery starts,
    and every service runs as before under LocalExecutor."""
    services = _resolve(compose, set())
    assert set(services) == DEFAULT_SERVICES
    for name, svc in services.items():
        assert "profiles" not in svc, name
        for dep in svc.get("depends_on") or {}:
            assert dep in DEFAULT_SERVICES, (name, dep)
        if name == "postgres":
            continue
        assert svc["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert svc["build"]["args"] == {
            "AIRFLOW_EXECUTOR": "LocalExecutor",
            "SEGMENTS_ENGINE": "duckdb",
        }
        assert svc["environment"]["SEGMENTS_ENGINE"] == "duckdb"
        assert svc["image"] == "customer-segmentation-warehouse:latest"
        celery_keys = {k for k in svc["environment"] if "CELERY" in k}
        assert celery_keys == INERT_CELERY_ENV, name
    assert services["airflow-init"]["command"] == [
        'airflow db migrate && airflow pools set duckdb_writer 1 "Serialises DuckDB writers"'
    ]
    # The Celery profile's services are the only ones with a profile.
    with_profiles = {n for n, s in compose["services"].items() if "profiles" in s}
    assert with_profiles == CELERY_SERVICES


def test_celery_profile_switches_every_airflow_service(compose: dict) -> None:
    services = _resolve(compose, {"celery"}, AIRFLOW_EXECUTOR="CeleryExecutor")
    assert set(services) == DEFAULT_SERVICES | CELERY_SERVICES
    for svc in compose["services"].values():
        if svc.get("profiles"):
            assert svc["profiles"] == ["celery"]
    airflow = {n: s for n, s in services.items() if n not in {"postgres", "redis"}}
    for name, svc in airflow.items():
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        # The image the scheduler and workers share carries the Celery provider.
        assert svc["build"]["args"]["AIRFLOW_EXECUTOR"] == "CeleryExecutor", name
        assert svc["image"] == services["airflow-scheduler"]["image"]
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        # Results in the metadata DB (db+ SQLAlchemy URL), same server and database.
        backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert backend.startswith("db+postgresql://")
        conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert backend.split("@", 1)[1] == conn.split("@", 1)[1] == "postgres:5432/airflow"


def test_redis_broker_is_healthchecked_and_private(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis  # only the stack's network reaches the broker


def test_worker_runs_celery_after_init_broker_and_api_server(compose: dict) -> None:
    worker = compose["services"]["airflow-worker"]
    command = worker["command"][0]
    assert command.rstrip().endswith("exec airflow celery worker")
    # Under LocalExecutor it refuses to start instead of idling.
    assert '"$${AIRFLOW__CORE__EXECUTOR}" != CeleryExecutor' in command and "exit 1" in command
    assert worker["entrypoint"][:2] == ["/usr/bin/tini", "--"]
    deps = worker["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    assert deps["airflow-api-server"]["condition"] == "service_healthy"
    assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    probe = worker["healthcheck"]["test"]
    assert probe[0] == "CMD-SHELL"
    assert "celery_executor.app inspect ping" in probe[1] and "celery@$${HOSTNAME}" in probe[1]
    assert "container_name" not in worker and "hostname" not in worker  # --scale works
    assert "ports" not in worker
    assert int(worker["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) >= 1

    flower = compose["services"]["flower"]
    assert flower["command"] == ["celery", "flower"]
    assert "5555:5555" in flower["ports"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "localhost:5555" in flower["healthcheck"]["test"][-1]


def test_workers_share_the_warehouse_volumes(compose: dict) -> None:
    """Tasks run on the workers: they must see the same warehouse files (read-write),
    code and logs as the scheduler's side, at the same paths."""
    services = _resolve(compose, {"celery"}, AIRFLOW_EXECUTOR="CeleryExecutor")
    worker, scheduler = services["airflow-worker"], services["airflow-scheduler"]
    assert worker["volumes"] == scheduler["volumes"]
    assert not any(v.endswith(":ro") for v in worker["volumes"])
    assert "./data/warehouse:/opt/segments/data/warehouse" in worker["volumes"]
    for key, value in scheduler["environment"].items():
        assert worker["environment"][key] == value, key


def test_single_writer_pool_is_created_in_both_modes(compose: dict) -> None:
    """Pools are the scheduler's, whatever the executor: the init step that creates
    duckdb_writer (1 slot) has no profile, so it runs in the Celery stack too, and
    every Airflow service waits for it."""
    tasks = (REPO_ROOT / "plugins" / "segment_warehouse" / "tasks.py").read_text()
    assert re.search(r'^WRITER_POOL = "duckdb_writer"$', tasks, re.M)
    for profiles, env in (
        (set(), {}),
        ({"celery"}, {"AIRFLOW_EXECUTOR": "CeleryExecutor"}),
    ):
        services = _resolve(compose, profiles, **env)
        init = services["airflow-init"]
        assert "pools set duckdb_writer 1 " in init["command"][0]
        for name, svc in services.items():
            if (name.startswith("airflow-") and name != "airflow-init") or name == "flower":
                assert svc["depends_on"]["airflow-init"] == {
                    "condition": "service_completed_successfully"
                }, name


def _pins(text: str) -> dict[str, str]:
    found = re.findall(r"([A-Za-z0-9_.\-]+)(?:\[[a-z,]+\])?==([0-9][\w.]*)", text)
    return {name.lower().replace("_", "-"): version for name, version in found}


def test_celery_image_installs_the_provider_only_when_asked(compose: dict) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG AIRFLOW_EXECUTOR=LocalExecutor" in dockerfile
    block = dockerfile.split("ARG CELERY_REQUIREMENTS=", 1)[1].split("\n\n", 1)[0]
    assert 'if [ "$AIRFLOW_EXECUTOR" = CeleryExecutor ]' in block
    assert "pip install -c /tmp/requirements.txt $CELERY_REQUIREMENTS" in block
    pins = _pins(block.split('"')[1])
    assert {"apache-airflow-providers-celery", "celery", "redis", "flower"} <= set(pins)
    # 5.7.0 removed celery.backends.database.retry, which provider 3.26.0 imports.
    assert pins["celery"] != "5.7.0"
    # Not in requirements.txt (the .venv and CI stay as they are), and never a
    # second version of a package requirements.txt pins.
    stack = _pins((REPO_ROOT / "requirements.txt").read_text())
    assert "apache-airflow-providers-celery" not in stack
    for name, version in pins.items():
        assert stack.get(name, version) == version, name


@pytest.mark.parametrize("profiles", [set(), {"celery"}])
def test_spark_engine_reaches_the_image_and_every_task(compose: dict, profiles: set) -> None:
    """SEGMENTS_ENGINE=spark builds the image with Java and requirements-spark.txt and
    gives the tasks the same engine, with either executor (an image without Spark
    under an engine that needs it would fail every run at its first check)."""
    env = {"SEGMENTS_ENGINE": "spark"}
    if profiles:
        env["AIRFLOW_EXECUTOR"] = "CeleryExecutor"
    for name, svc in _resolve(compose, profiles, **env).items():
        if name in {"postgres", "redis"}:
            continue
        assert svc["build"]["args"]["SEGMENTS_ENGINE"] == "spark", name
        assert svc["environment"]["SEGMENTS_ENGINE"] == "spark", name
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG SEGMENTS_ENGINE=duckdb" in dockerfile
    block = dockerfile.split("ARG SEGMENTS_ENGINE=duckdb", 1)[1].split("\n\n", 1)[0]
    assert 'if [ "$SEGMENTS_ENGINE" = spark ]' in block
    assert "openjdk-17-jre-headless" in block  # pyspark 4 needs Java 17+
    assert "pip install -c /tmp/requirements.txt -r /tmp/requirements-spark.txt" in block
    # requirements-spark.txt never moves a pin of the stack
    stack = _pins((REPO_ROOT / "requirements.txt").read_text())
    spark = _pins((REPO_ROOT / "requirements-spark.txt").read_text())
    assert {"pyspark", "dbt-spark"} <= set(spark)
    for package, version in spark.items():
        assert stack.get(package, version) == version, package


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize(
    ("args", "env"),
    [([], {}), (["--profile", "celery"], {"AIRFLOW_EXECUTOR": "CeleryExecutor"})],
    ids=["default", "celery"],
)
def test_compose_cli_accepts_the_file(args: list[str], env: dict[str, str]) -> None:
    """`docker compose config` needs no engine; skipped where no compose CLI is installed."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose CLI")
    result = subprocess.run(
        [*cli, "-f", str(REPO_ROOT / "docker-compose.yml"), *args, "config", "--services"],
        capture_output=True,
        text=True,
        env={**os.environ, **REQUIRED_SECRETS, **env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= DEFAULT_SERVICES
