"""Audience exports for activation tools (``SEGMENTS_EXPORTS_DIR``).

Read from the *published* snapshot (what the API serves), written as one
release directory per export and switched into place atomically::

    <exports_dir>/current -> releases/<export_id>/     (symlink, os.replace)
    <exports_dir>/releases/<export_id>/
        manifest.json                                   (written last)
        rules/<rule_id>.parquet|.csv                    customers shown the rule's content
        segments/<segment-slug>.parquet|.csv            consenting members of a segment
        destinations/<destination_id>/{rules,segments}/<name>.parquet|.csv

A consumer reads through ``current/``: it sees the previous release or the
new one, never a half-written one. After the switch the older releases are
deleted, so audiences of rules or segments that no longer exist disappear, and
so does every trace of an erased customer once the next export runs.

What is exported: the pseudonymous ``customer_id`` of the marts (not an email,
not a CRM id), consenting customers only (``marketing_consent = true``).
A rule's audience excludes its experiment's control group (they must not get
the treatment through another channel). A destination with
``hashed_email: true`` in the rules file (an explicit, approved opt-in) also
gets ``email_sha256``: SHA-256 of the normalised (trimmed, lower-cased)
email, the form ad platforms match on. The raw email never reaches the
snapshot: it is read here from the working warehouse, hashed inside DuckDB,
for that destination's consenting customers only (consent checked in both the
snapshot and the warehouse, so a withdrawal since the last decide counts).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.fileutil import fsync_path

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CURRENT = "current"
RELEASES = "releases"


class ExportError(RuntimeError):
    """The export could not be written; the previous release stays current."""


@dataclass
class ExportResult:
    run_id: str
    export_id: str
    path: str  # the release directory (also reachable as <exports_dir>/current)
    manifest: str
    as_of_date: str | None
    rules_version: str | None
    audiences: int
    files: int
    customers_by_audience: dict[str, int] = field(default_factory=dict)
    removed_releases: list[str] = field(default_factory=list)


def slug(name: str) -> str:
    """File-name-safe form of a segment name ('Browsers, no purchase' -> browsers-no-purchase)."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text or "unnamed"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _has_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    rows = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(rows[0][0])


def _arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pa.Table:
    # con.sql(...).to_arrow_table() streams without the extra copy a DB-API
    # result makes; every earlier result on `con` must be fully fetched.
    return con.sql(sql, params=params).to_arrow_table()


class _Writer:
    """Writes one audience as Parquet + CSV and records them for the manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[dict[str, Any]] = []

    def write(self, rel_dir: str, name: str, table: pa.Table, meta: dict[str, Any]) -> None:
        folder = self.root / rel_dir
        folder.mkdir(parents=True, exist_ok=True)
        for fmt in ("parquet", "csv"):
            path = folder / f"{name}.{fmt}"
            if fmt == "parquet":
                pq.write_table(table, path, compression="zstd")
            else:
                pacsv.write_csv(table, path)
            self.files.append(
                {
                    **meta,
                    "path": path.relative_to(self.root).as_posix(),
                    "format": fmt,
                    "rows": table.num_rows,
                    "columns": table.column_names,
                    "bytes": path.stat().st_size,
                    "sha256": _sha256_file(path),
                }
            )


def export_audiences(*, run_id: str, settings: Settings | None = None) -> ExportResult:
    """Write every rule's and segment's audience from the published snapshot."""
    settings = settings or get_settings()
    snapshot = settings.analytics_db
    if not snapshot.exists():
        raise ExportError(f"no published snapshot at {snapshot}: publish before exporting")
    exports_dir = settings.exports_dir
    releases = exports_dir / RELEASES
    releases.mkdir(parents=True, exist_ok=True)
    export_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    release = releases / export_id
    staging = releases / f".{export_id}.partial"
    staging.mkdir()
    try:
        result = _write_release(staging, run_id=run_id, export_id=export_id, settings=settings)
        fsync_path(staging)
        staging.rename(release)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Switch `current` with one atomic rename of a symlink.
    link_tmp = exports_dir / f".{CURRENT}.{export_id}"
    link_tmp.unlink(missing_ok=True)
    os.symlink(Path(RELEASES) / export_id, link_tmp)
    os.replace(link_tmp, exports_dir / CURRENT)
    fsync_path(exports_dir)
    removed = []
    for old in sorted(releases.iterdir()):
        if old.name != export_id:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
    result.path = str(release)
    result.manifest = str(release / MANIFEST)
    result.removed_releases = removed
    log.info(
        "exported %d audiences (%d files) to %s", result.audiences, result.files, release
    )
    return result


def _write_release(
    root: Path, *, run_id: str, export_id: str, settings: Settings
) -> ExportResult:
    con = duckdb.connect(str(settings.analytics_db), read_only=True)
    try:
        for schema, table in (
            ("personalisation", "content_decisions"),
            ("personalisation", "content_rules"),
        ):
            if not _has_table(con, schema, table):
                raise ExportError(
                    f"the published snapshot has no {schema}.{table}: run decide and publish first"
                )
        writer = _Writer(root)
        counts: dict[str, int] = {}
        rules = con.execute(
            "select rule_id, slot_id, content_id, experiment_id, rules_version "
            "from personalisation.content_rules order by position"
        ).fetchall()
        (as_of_day,) = con.execute(
            "select max(decided_at)::date from personalisation.content_decisions"
        ).fetchall()[0]
        as_of = as_of_day.isoformat() if as_of_day else None
        rules_version = rules[0][4] if rules else None
        consent_ok = (
            "customer_id in (select customer_id from marts.customer_profiles "
            "where marketing_consent)"
        )
        rule_sql = (
            "select customer_id from personalisation.content_decisions "
            f"where rule_id = ? and variant is distinct from 'control' and {consent_ok} "
            "order by customer_id"
        )
        rule_tables: dict[str, pa.Table] = {}
        for rule_id, slot_id, content_id, experiment_id, _ in rules:
            table = _arrow(con, rule_sql, [rule_id])
            rule_tables[rule_id] = table
            counts[f"rule:{rule_id}"] = table.num_rows
            writer.write(
                "rules", rule_id, table,
                {"audience": "rule", "id": rule_id, "slot_id": slot_id, "content_id": content_id,
                 "experiment_id": experiment_id},
            )
        segment_tables: dict[str, pa.Table] = {}
        if _has_table(con, "segments", "customer_segments"):
            names = [r[0] for r in con.execute(
                "select distinct segment_name from segments.customer_segments "
                "where segment_name is not null order by 1"
            ).fetchall()]
            used: set[str] = set()
            for name in names:
                file_name = slug(name)
                while file_name in used:  # two names with the same slug
                    file_name += "-x"
                used.add(file_name)
                table = _arrow(
                    con,
                    "select customer_id from segments.customer_segments "
                    f"where segment_name = ? and {consent_ok} order by customer_id",
                    [name],
                )
                segment_tables[file_name] = table
                counts[f"segment:{name}"] = table.num_rows
                writer.write("segments", file_name, table, {"audience": "segment", "id": name})
        destinations = []
        if _has_table(con, "personalisation", "export_destinations"):
            destinations = con.execute(
                "select destination_id, rule_ids, segments, sends_email_sha256, approval "
                "from personalisation.export_destinations order by destination_id"
            ).fetchall()
    finally:
        con.close()

    dest_meta = []
    for dest_id, rule_ids, with_segments, hashed, approval in destinations:
        wanted = [("rules", r, rule_tables[r]) for r in rule_ids if r in rule_tables]
        if with_segments:
            wanted += [("segments", n, t) for n, t in segment_tables.items()]
        hashes = _email_hashes(settings, wanted) if hashed else None
        for kind, name, table in wanted:
            out = table
            if hashes is not None:
                out = _with_hashes(table, hashes)
            writer.write(
                f"destinations/{dest_id}/{kind}", name, out,
                {"audience": kind[:-1], "id": name, "destination": dest_id,
                 "hashed_email": bool(hashed)},
            )
        dest_meta.append({"id": dest_id, "hashed_email": bool(hashed), "approval": approval,
                          "rules": list(rule_ids), "segments": bool(with_segments)})

    manifest = {
        "export_id": export_id,
        "run_id": run_id,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "as_of_date": as_of,
        "rules_version": rules_version,
        "customer_id": "pseudonymous customer_id of marts.customer_profiles; consenting "
                       "customers only; rule audiences exclude experiment control groups",
        "audiences": counts,
        "destinations": dest_meta,
        "files": writer.files,
    }
    # Last: a release with a manifest is complete.
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    os.replace(tmp, root / MANIFEST)
    return ExportResult(
        run_id=run_id,
        export_id=export_id,
        path=str(root),
        manifest=str(root / MANIFEST),
        as_of_date=as_of,
        rules_version=rules_version,
        audiences=len(counts),
        files=len(writer.files),
        customers_by_audience=counts,
    )


def _email_hashes(settings: Settings, wanted: list[tuple[str, str, pa.Table]]) -> pa.Table:
    """customer_id -> sha256(normalised email) for the opted-in destination's customers.

    Reads the working warehouse read-only (raw email is never published) and
    keeps customers whose current profile there still says consent = true.
    """
    ids = sorted({cid for _, _, t in wanted for cid in t.column("customer_id").to_pylist()})
    con = duckdb.connect()
    try:
        con.execute("attach ? as wh (read_only)", [str(settings.warehouse_db)]).fetchall()
        con.register("wanted_ids", pa.table({"customer_id": pa.array(ids, pa.string())}))
        return _arrow(
            con,
            """
            select a.customer_id, sha256(lower(trim(a.email))) as email_sha256
            from wh.intermediate.int_customers_aggregated a
            join wanted_ids w using (customer_id)
            join wh.marts.customer_profiles p using (customer_id)
            where p.marketing_consent and nullif(trim(a.email), '') is not null
            order by a.customer_id
            """,
        )
    except duckdb.Error as exc:
        raise ExportError(f"hashed-email export could not read the warehouse: {exc}") from exc
    finally:
        con.close()


def _with_hashes(table: pa.Table, hashes: pa.Table) -> pa.Table:
    """Inner join on customer_id: ad platforms can only use rows with a hash."""
    con = duckdb.connect()
    try:
        con.register("audience", table)
        con.register("hashes", hashes)
        return _arrow(
            con,
            "select customer_id, email_sha256 from audience join hashes using (customer_id) "
            "order by customer_id",
        )
    finally:
        con.close()
