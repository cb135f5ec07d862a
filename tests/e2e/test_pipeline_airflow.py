"""End to end through real Airflow: `segment_warehouse.cli run` = `make run`.

A small generated landing zone goes through both DAGs (`airflow dags test`
against a throwaway AIRFLOW_HOME with SQLite metadata). Then a second run with
nothing new must leave the published tables identical.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.e2e

LOGICAL_DATE = "2026-11-22"
CONTRACT_TABLES = (
    "marts.customer_profiles",
    "marts.identity_map",
    "segments.customer_segments",
    "segments.segment_runs",
    "segments.segment_summary",
)


def _run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segment_warehouse.cli", "run", "--date", LOGICAL_DATE],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _table_digests(db: Path) -> dict[str, str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in ('marts', 'segments') order by 1"
        ).fetchall()
        digests = {}
        for (table,) in tables:
            rows = con.execute(f"select * from {table} order by all").fetchall()
            digests[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return digests
    finally:
        con.close()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ)
    env.update(
        SEGMENTS_LANDING_DIR=str(root / "landing"),
        SEGMENTS_WAREHOUSE_DIR=str(root / "warehouse"),
        SEGMENTS_REPORTS_DIR=str(root / "reports"),
        SEGMENTS_PII_KEY="e2e-secret",
        AIRFLOW_HOME=str(root / "airflow_home"),
    )
    gen = subprocess.run(
        [
            sys.executable, "-m", "segment_tools.generator",
            "--customers", "400", "--seed", "11", "--out", str(root / "landing"),
            "--truth-dir", str(root / "truth"),
        ],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-3000:]
    first = _run_cli(env)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]
    digests_after_first = _table_digests(root / "warehouse" / "analytics.duckdb")
    second = _run_cli(env)
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-3000:]
    digests_after_second = _table_digests(root / "warehouse" / "analytics.duckdb")
    third = _run_cli(env)
    assert third.returncode == 0, third.stdout[-5000:] + third.stderr[-3000:]
    return {
        "root": root,
        "first": first,
        "second": second,
        "digests_after_first": digests_after_first,
        "digests_after_second": digests_after_second,
    }


def test_cli_output_is_readable(pipeline: dict) -> None:
    out = pipeline["first"].stdout
    assert "segment_pipeline succeeded" in out
    assert "recluster_segments succeeded" in out
    for task in ("load_crm", "dbt_build", "validate_warehouse", "publish_snapshot", "recluster"):
        assert f"✓ {task}" in out
    # Airflow's and GX's own logs go to the log file, not the terminal
    assert len(out.splitlines()) < 160
    assert "great_expectations" not in out


def test_contract_tables_published(pipeline: dict) -> None:
    con = duckdb.connect(str(pipeline["root"] / "warehouse" / "analytics.duckdb"), read_only=True)
    for table in CONTRACT_TABLES:
        (n,) = con.execute(f"select count(*) from {table}").fetchone()
        assert n > 0, table
    (dupes,) = con.execute(
        "select count(*) - count(distinct customer_id) from marts.customer_profiles"
    ).fetchone()
    assert dupes == 0
    # every mapped customer exists; every profile has a source id
    (orphans,) = con.execute(
        "select count(*) from marts.identity_map m anti join marts.customer_profiles p "
        "using (customer_id)"
    ).fetchone()
    assert orphans == 0
    # consent=false customers are not profiled, and counted as excluded
    (leaks,) = con.execute(
        "select count(*) from segments.customer_segments s join marts.customer_profiles p "
        "using (customer_id) where p.marketing_consent = false"
    ).fetchone()
    assert leaks == 0
    (n_false,) = con.execute(
        "select count(*) from marts.customer_profiles where marketing_consent = false"
    ).fetchone()
    (excluded,) = con.execute(
        "select n_excluded from segments.segment_runs order by created_at desc limit 1"
    ).fetchone()
    assert excluded == n_false
    con.close()


def test_every_contact_and_order_mapped_once(pipeline: dict) -> None:
    root = pipeline["root"]
    con = duckdb.connect(str(root / "warehouse" / "warehouse.duckdb"), read_only=True)
    con.execute(f"attach '{root / 'warehouse' / 'analytics.duckdb'}' as snap (read_only)")
    for source, raw_table, key in (
        ("crm", "raw.crm_contacts", "contact_id"),
        ("transactions", "raw.transactions_orders", "order_id"),
    ):
        (missing,) = con.execute(
            f"select count(distinct {key}) from {raw_table} r where not exists "
            f"(select 1 from snap.marts.identity_map m where m.source = '{source}' "
            f"and m.source_id = r.{key})"
        ).fetchone()
        assert missing == 0, source
        (multi,) = con.execute(
            "select count(*) from (select source_id from snap.marts.identity_map "
            f"where source = '{source}' group by 1 having count(*) > 1)"
        ).fetchone()
        assert multi == 0, source
    con.close()


def test_audit_tables_account_for_every_row(pipeline: dict) -> None:
    con = duckdb.connect(str(pipeline["root"] / "warehouse" / "warehouse.duckdb"), read_only=True)
    (bad,) = con.execute(
        "select count(*) from audit.load_manifest where status <> 'duplicate' "
        "and rows_loaded + rows_quarantined <> rows_in_file"
    ).fetchone()
    assert bad == 0
    (files,) = con.execute("select count(*) from audit.load_manifest").fetchone()
    landed = [p for p in (pipeline["root"] / "landing").rglob("*") if p.is_file()]
    assert files == len(landed)
    (quarantined,) = con.execute("select count(*) from audit.quarantine").fetchone()
    assert quarantined > 0  # the generator injects contract-breaking rows
    suites = {
        r[0] for r in con.execute("select distinct suite from audit.validation_results").fetchall()
    }
    assert {"raw_contract", "staging", "marts", "segments"} <= suites
    con.close()


def test_reports_written(pipeline: dict) -> None:
    reports = pipeline["root"] / "reports"
    assert (reports / "validation" / "index.html").stat().st_size > 1000
    assert (reports / "segments" / "index.html").stat().st_size > 1000


def test_reruns_with_nothing_new_change_nothing(pipeline: dict) -> None:
    """Second and third `make run` with no new files: published tables identical."""
    after_third = _table_digests(pipeline["root"] / "warehouse" / "analytics.duckdb")
    assert pipeline["digests_after_second"] == pipeline["digests_after_first"]
    assert after_third == pipeline["digests_after_first"]
    con = duckdb.connect(str(pipeline["root"] / "warehouse" / "analytics.duckdb"), read_only=True)
    assert con.execute("select count(*) from segments.segment_runs").fetchone() == (1,)
    con.close()
