"""Audience exports: contents, manifest, atomic switch, hashed-email opt-in, erasure."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import duckdb
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from test_personalisation_decide import RULES, _at_risk, profile, write_inputs

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.personalisation import bucket, decide, export_audiences
from segment_warehouse.personalisation.exports import ExportError, slug
from segment_warehouse.publish import publish_snapshot

DESTINATIONS = """
destinations:
  - id: crm_tool
    rules: [vip]
    segments: true
  - id: ads
    rules: [winback, vip]
    hashed_email: true
    approval: GOV-TEST-1
"""


@pytest.fixture
def env(segments_env: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    rules = segments_env / "content_rules.yml"
    rules.write_text(RULES + DESTINATIONS)
    monkeypatch.setenv("SEGMENTS_CONTENT_RULES", str(rules))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    return get_settings()


PEOPLE = [
    *_at_risk(40),
    profile("v1", rfm="Champions", segment="Lapsed"),
    profile("v2", rfm="Champions"),
    profile("v_unknown", consent=None, rfm="Champions", segment="Lapsed"),
    profile("v_no", consent=False, rfm="Champions"),
]


def run_all(settings: Settings, people: list[dict] | None = None, day: str = "2026-12-05"):
    write_inputs(settings, PEOPLE if people is None else people)
    decide(run_id="r", as_of=day)
    publish_snapshot(run_id="r", settings=settings)
    return export_audiences(run_id="r", settings=settings)


def ids(path: Path) -> list[str]:
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    return table.column("customer_id").to_pylist()


def test_rule_and_segment_audiences(env: Settings) -> None:
    result = run_all(env)
    current = env.exports_dir / "current"
    assert current.is_symlink() and current.resolve() == Path(result.path).resolve()
    treatment = sorted(
        p["customer_id"] for p in _at_risk(40) if bucket("winback_exp", p["customer_id"]) >= 0.5
    )
    for fmt in ("parquet", "csv"):
        assert ids(current / "rules" / f"winback.{fmt}") == treatment  # control held out
        assert ids(current / "rules" / f"vip.{fmt}") == ["v1", "v2"]  # consenting only
        assert ids(current / "rules" / f"vip_tie.{fmt}") == []  # shadowed: empty, but present
        assert ids(current / "segments" / f"lapsed.{fmt}") == ["v1"]  # not v_unknown
    manifest = json.loads((current / "manifest.json").read_text())
    assert manifest["as_of_date"] == "2026-12-05"
    assert manifest["rules_version"] == result.rules_version and result.rules_version
    assert manifest["audiences"]["rule:winback"] == len(treatment)
    for entry in manifest["files"]:
        data = (current / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    # The crm tool gets ids only; the approved ads destination also gets hashed emails.
    crm = current / "destinations" / "crm_tool"
    assert pq.read_table(crm / "rules" / "vip.parquet").column_names == ["customer_id"]
    assert (crm / "segments" / "lapsed.csv").exists()
    ads = pq.read_table(current / "destinations" / "ads" / "rules" / "vip.parquet")
    assert ads.column_names == ["customer_id", "email_sha256"]
    assert ads.column("email_sha256").to_pylist() == [
        hashlib.sha256(f"{c}@example.org".encode()).hexdigest() for c in ("v1", "v2")
    ]
    assert not (current / "destinations" / "ads" / "segments").exists()
    # No raw email anywhere in the export.
    for path in current.rglob("*"):
        if path.suffix == ".csv":
            assert "@" not in path.read_text()
        if path.suffix == ".parquet":
            assert "@" not in repr(pq.read_table(path).to_pylist())


def test_segment_slugs() -> None:
    assert slug("Browsers, no purchase") == "browsers-no-purchase"
    assert slug("../../etc") == "etc"
    assert slug("***") == "unnamed"


def test_hashed_email_respects_current_warehouse_consent(env: Settings) -> None:
    write_inputs(env, PEOPLE)
    decide(run_id="r", as_of="2026-12-05")
    publish_snapshot(run_id="r", settings=env)
    # v2 withdraws consent after the snapshot was published.
    con = duckdb.connect(str(env.warehouse_db))
    con.execute("update marts.customer_profiles set marketing_consent = false "
                "where customer_id = 'v2'")
    con.close()
    export_audiences(run_id="r", settings=env)
    ads = env.exports_dir / "current" / "destinations" / "ads" / "rules" / "vip.csv"
    assert ids(ads) == ["v1"]


def test_reexport_replaces_release_and_drops_removed_audiences(env: Settings) -> None:
    first = run_all(env)
    env.content_rules.write_text(
        (RULES + DESTINATIONS).replace("rules: [vip]", "rules: [winback]")
        .replace("rules: [winback, vip]", "rules: [winback]")
        .replace("  - id: vip\n", "  - id: vip_renamed\n")
    )
    second = run_all(env)
    assert first.export_id != second.export_id
    assert not Path(first.path).exists()
    assert [p.name for p in (env.exports_dir / "releases").iterdir()] == [second.export_id]
    rules_dir = env.exports_dir / "current" / "rules"
    assert not (rules_dir / "vip.csv").exists()
    assert (rules_dir / "vip_renamed.csv").exists()


def test_consumer_never_sees_partial_release(env: Settings) -> None:
    run_all(env)
    current = env.exports_dir / "current"
    problems: list[str] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            # A consumer resolves `current` once and reads everything from there.
            root = current.resolve()
            try:
                manifest = json.loads((root / "manifest.json").read_text())
                if manifest["export_id"] != root.name:
                    problems.append("manifest of another release")
                for entry in manifest["files"][:6]:
                    data = (root / entry["path"]).read_bytes()
                    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                        problems.append(f"checksum mismatch {entry['path']}")
            except FileNotFoundError:
                # The release it resolved was deleted after the next switch: the
                # consumer retries; it never reads a half-written file.
                continue
            except json.JSONDecodeError as exc:
                problems.append(f"half-written manifest: {exc}")

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        for _ in range(4):
            export_audiences(run_id="again", settings=env)
    finally:
        stop.set()
        reader.join()
    assert problems == []


def test_erased_customer_leaves_no_trace_in_exports(env: Settings) -> None:
    run_all(env)
    assert "v1" in ids(env.exports_dir / "current" / "rules" / "vip.csv")
    # What erasure does in the warehouse (sweep by customer_id), then the next
    # decide / publish / export.
    remaining = [p for p in PEOPLE if p["customer_id"] != "v1"]
    write_inputs(env, remaining)
    con = duckdb.connect(str(env.warehouse_db))
    for table in ("content_decisions", "experiment_assignments"):
        con.execute(f"delete from personalisation.{table} where customer_id = 'v1'")
    con.close()
    decide(run_id="r2", as_of="2026-12-06")
    publish_snapshot(run_id="r2", settings=env)
    export_audiences(run_id="r2", settings=env)
    for path in env.exports_dir.rglob("*"):
        if path.is_file():
            text = path.read_text() if path.suffix in {".csv", ".json"} else repr(
                pq.read_table(path).to_pylist()
            )
            assert '"v1"' not in text and "'v1'" not in text, path


def test_export_needs_a_snapshot(env: Settings) -> None:
    with pytest.raises(ExportError, match="no published snapshot"):
        export_audiences(run_id="r", settings=env)


def test_segment_pipeline_refresh_drops_an_erased_customer_without_a_recluster(
    env: Settings,
) -> None:
    """segment_pipeline's refresh_exports: after the erasure sweep and the publish, the
    exports lose the erased customer even if recluster_segments never runs again."""
    from segment_warehouse import tasks

    assert tasks.refresh_exports("r0") == {"skipped": "no audience export yet"}
    assert not (env.exports_dir / "current").exists()
    # a release in the exports dir but a snapshot without decisions (a new warehouse
    # on an old SEGMENTS_EXPORTS_DIR): left alone, the run does not fail
    (env.exports_dir / "current").mkdir(parents=True)
    con = duckdb.connect(str(env.analytics_db))
    con.execute("create schema marts")
    con.close()
    assert tasks.refresh_exports("r1") == {"skipped": "the snapshot has no content decisions yet"}
    (env.exports_dir / "current").rmdir()
    env.analytics_db.unlink()
    run_all(env)
    assert "v1" in ids(env.exports_dir / "current" / "rules" / "vip.csv")
    write_inputs(env, [p for p in PEOPLE if p["customer_id"] != "v1"])
    con = duckdb.connect(str(env.warehouse_db))
    for table in ("content_decisions", "experiment_assignments"):
        con.execute(f"delete from personalisation.{table} where customer_id = 'v1'")
    con.close()
    publish_snapshot(run_id="r2", settings=env)  # no decide: recluster_segments did not run
    result = tasks.refresh_exports("r2")
    assert result["export_id"]
    assert "v1" not in ids(env.exports_dir / "current" / "rules" / "vip.csv")
    assert "v2" in ids(env.exports_dir / "current" / "rules" / "vip.csv")
