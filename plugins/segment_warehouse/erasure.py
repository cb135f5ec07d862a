"""Right to erasure: remove a person from every layer and keep them out.

Requests arrive as landing files under ``erasure/`` (``request_id``,
``contact_id`` or ``email``, ``requested_at``) and are loaded into
``raw.erasure_requests`` like any other source (a request with an unparseable
``requested_at`` or no ``request_id`` is still loaded and executed; one that cannot be
read at all is quarantined without its content and flagged for escalation).
:func:`apply_erasure_requests` then, for every request not yet processed:

1. expands the subject to all of their identifiers: the contact ids, emails and phones
   that match directly, the orders placed with those emails (guest checkouts), plus
   everything the last identity resolution linked to the same ``customer_id`` (orders,
   anonymous ids, other contacts), and the devices whose events reference those orders;
2. deletes matching rows from ``raw``, ``audit.quarantine`` and, by identifier
   column name, from every table in ``staging``, ``intermediate``, ``marts``,
   ``segments`` and ``personalisation`` (so incremental dbt models cannot resurrect them);
3. records keyed hashes (``privacy.keyed_hash``, the project's one HMAC) of the
   identifiers - phones included - in ``audit.erasure_suppression`` so later deliveries
   of the same person are quarantined at load time without their content (see
   ``ingest.suppression``), and logs the request, without PII, in ``audit.erasure_log``;
4. blanks the identifiers in ``raw.erasure_requests`` itself.

After the requests are committed, the database file is rewritten (copy-and-swap,
:func:`rewrite_database`) so that no freed block still holds an erased value, and the
fitted models under ``settings.models_dir`` are dropped (they saw the person; the next
recluster/predict run fits new ones). The Spark engine's Parquet copies holding the
person are rewritten without them (``spark.erasure``), and Parquet snapshot directories
no published snapshot reads are removed (``publish.purge_snapshots_after_erasure``).
The next ``dbt build`` and ``publish`` then produce tables without the person.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.privacy import keyed_hash, phone_key, verify_key
from segment_warehouse.warehouse import (
    ensure_schemas,
    quote_ident,
    quote_literal,
    table_columns,
    table_exists,
    warehouse,
)

log = logging.getLogger(__name__)

ERASURE_DDL: tuple[str, ...] = (
    """
    create table if not exists audit.erasure_log (
        request_id varchar not null,
        requested_at varchar,
        processed_at timestamptz not null,
        subject_hash varchar not null,       -- keyed hash of the requested identifier
        identifiers_erased integer not null,
        rows_deleted bigint not null,
        rows_deleted_by_table varchar        -- JSON {"schema.table": n}
    )
    """,
    """
    create table if not exists audit.erasure_suppression (
        identifier_type varchar not null,    -- contact_id | email | anonymous_id | order_id
                                             -- | phone
        identifier_hash varchar not null,    -- privacy.keyed_hash of the normalised value
        request_id varchar not null,
        suppressed_at timestamptz not null
    )
    """,
    # 'hmac-sha256' (privacy.keyed_hash). Rows written before the column existed used
    # sha256(key || 0x1f || value); they cannot be re-keyed without the values, so
    # ingest keeps matching them with that digest (scheme null).
    "alter table audit.erasure_suppression add column if not exists hash_scheme varchar",
)
HASH_SCHEME = "hmac-sha256"

# Columns that identify a person, by the kind of identifier they hold. Tables in
# the modelled layers are swept by these names, whatever dbt builds.
_ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "contact_id": ("contact_id", "user_id"),
    "email": ("email", "trait_email"),
    "anonymous_id": ("anonymous_id",),
    "order_id": ("order_id",),
    "customer_id": ("customer_id",),
}
_SWEPT_SCHEMAS = ("staging", "intermediate", "marts", "segments", "personalisation")


def normalise_email(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value or None


@dataclass
class Subject:
    contact_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    order_ids: set[str] = field(default_factory=set)
    customer_ids: set[str] = field(default_factory=set)
    # Phones as delivered and in E.164 (staging), for the phone_hash sweep.
    phones: set[str] = field(default_factory=set)

    def by_kind(self) -> dict[str, set[str]]:
        return {
            "contact_id": self.contact_ids,
            "email": self.emails,
            "anonymous_id": self.anonymous_ids,
            "order_id": self.order_ids,
            "customer_id": self.customer_ids,
        }

    def suppression_values(self) -> dict[str, set[str]]:
        """Normalised values per kind, as ingest hashes them at load time."""
        out = {k: v for k, v in self.by_kind().items() if k != "customer_id"}
        out["phone"] = {p for p in (phone_key(v) for v in self.phones) if p}
        return out

    def size(self) -> int:
        return sum(len(v) for v in self.by_kind().values())


@dataclass
class ErasureSummary:
    requests_processed: int = 0
    rows_deleted: int = 0
    request_ids: list[str] = field(default_factory=list)
    models_dropped: int = 0
    database_rewritten: bool = False
    # Parquet files under the Spark dir rewritten without the person (spark.erasure)
    spark_files_rewritten: int = 0
    spark_files_dropped: bool = False


def _expand_subject(
    con: duckdb.DuckDBPyConnection, contact_id: str | None, email: str | None
) -> Subject:
    subject = Subject()
    if contact_id:
        subject.contact_ids.add(contact_id.strip())
    if email:
        subject.emails.add(email)
    # Direct matches in the CRM export, both ways (contact -> emails, email -> contacts).
    if table_exists(con, "raw", "crm_contacts"):
        rows = con.execute(
            """
            select contact_id, lower(trim(email)), phone from raw.crm_contacts
            where list_contains(?, trim(contact_id)) or list_contains(?, lower(trim(email)))
            """,
            [sorted(subject.contact_ids), sorted(subject.emails)],
        ).fetchall()
        for cid, mail, phone in rows:
            subject.contact_ids.add(cid.strip())
            if mail:
                subject.emails.add(mail)
            if phone and phone.strip():
                subject.phones.add(phone.strip())
    # Orders placed under the subject's contact ids or emails (guest checkouts): a guest
    # is known by email only, so their customer is found through their orders.
    if table_exists(con, "raw", "transactions_orders"):
        rows = con.execute(
            """
            select order_id from raw.transactions_orders
            where list_contains(?, trim(contact_id)) or list_contains(?, lower(trim(email)))
            """,
            [sorted(subject.contact_ids), sorted(subject.emails)],
        ).fetchall()
        subject.order_ids |= {oid for (oid,) in rows}
    # Everything the last identity resolution linked to the same customer.
    if table_exists(con, "marts", "identity_map"):
        customers = con.execute(
            "select distinct customer_id from marts.identity_map "
            "where (source = 'crm' and list_contains(?, source_id)) "
            "or (source = 'transactions' and list_contains(?, source_id))",
            [sorted(subject.contact_ids), sorted(subject.order_ids)],
        ).fetchall()
        subject.customer_ids |= {c for (c,) in customers}
        if subject.customer_ids:
            linked = con.execute(
                "select source, source_id from marts.identity_map "
                "where list_contains(?, customer_id)",
                [sorted(subject.customer_ids)],
            ).fetchall()
            for source, source_id in linked:
                {
                    "crm": subject.contact_ids,
                    "analytics": subject.anonymous_ids,
                    "transactions": subject.order_ids,
                }[source].add(source_id)
    # Devices the subject logged in on (shared devices too: the person's own events go),
    # and devices whose events reference one of the subject's orders (a guest's device).
    if table_exists(con, "raw", "analytics_events"):
        order_ref = _order_ref(table_columns(con, "raw", "analytics_events"))
        rows = con.execute(
            f"""
            select distinct anonymous_id, json_extract_string(traits, '$.phone')
            from raw.analytics_events
            where anonymous_id is not null and (
                list_contains(?, user_id)
                or list_contains(?, lower(trim(json_extract_string(traits, '$.email'))))
                or list_contains(?, {order_ref}))
            """,
            [sorted(subject.contact_ids), sorted(subject.emails), sorted(subject.order_ids)],
        ).fetchall()
        subject.anonymous_ids |= {a for a, _ in rows}
        subject.phones |= {p.strip() for _, p in rows if p and p.strip()}
    # The E.164 forms staging made of those phones (the marts' phone_hash is over them).
    if table_exists(con, "staging", "stg_crm__contacts") and "phone_e164" in table_columns(
        con, "staging", "stg_crm__contacts"
    ):
        rows = con.execute(
            "select distinct phone_e164 from staging.stg_crm__contacts "
            "where phone_e164 is not null and list_contains(?, trim(contact_id))",
            [sorted(subject.contact_ids)],
        ).fetchall()
        subject.phones |= {p for (p,) in rows}
    return subject


# A subject's rows in a relation: SQL clauses over its columns (any one true
# means the row goes) and their positional parameters, in order. The one
# definition of "the person's rows", shared by the DuckDB deletes below and the
# rewrite of the Spark engine's Parquet files (spark.erasure).
Clauses = tuple[list[str], list[Any]]

# The raw tables with their own rules (identifiers as the loaders deliver them:
# untrimmed, mixed case, inside JSON).
RAW_TABLES = ("crm_contacts", "transactions_orders", "analytics_events")


def _subject_params(subject: Subject) -> dict[str, list[str]]:
    return {
        "contacts": sorted(subject.contact_ids),
        "emails": sorted(subject.emails),
        "anons": sorted(subject.anonymous_ids),
        "orders": sorted(subject.order_ids),
    }


def raw_clauses(table: str, columns: Collection[str], subject: Subject) -> Clauses:
    """The subject's rows of ``raw.<table>`` (empty for a table without its own rules)."""
    params = _subject_params(subject)
    candidates: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
        "crm_contacts": [
            ("contacts", "list_contains(?, trim(contact_id))", ("contact_id",)),
            ("emails", "list_contains(?, lower(trim(email)))", ("email",)),
        ],
        "transactions_orders": [
            ("orders", "list_contains(?, order_id)", ("order_id",)),
            ("contacts", "list_contains(?, trim(contact_id))", ("contact_id",)),
            ("emails", "list_contains(?, lower(trim(email)))", ("email",)),
        ],
        "analytics_events": [
            ("anons", "list_contains(?, anonymous_id)", ("anonymous_id",)),
            ("contacts", "list_contains(?, user_id)", ("user_id",)),
            (
                "emails",
                "list_contains(?, lower(trim(json_extract_string(traits, '$.email'))))",
                ("traits",),
            ),
            (
                "orders",
                f"list_contains(?, {_order_ref(columns)})",
                ("properties",),
            ),
        ],
    }
    clauses: list[str] = []
    values: list[Any] = []
    for param, clause, needs in candidates.get(table, []):
        if params[param] and all(c in columns for c in needs):
            clauses.append(clause)
            values.append(params[param])
    return clauses, values


def _order_ref(columns: Collection[str]) -> str:
    """SQL for the order an event references (Order Completed's ``properties.order_id``)."""
    if "properties" in columns:
        return "json_extract_string(properties, '$.order_id')"
    return "cast(null as varchar)"


def id_clauses(columns: Collection[str], subject: Subject, key: str) -> Clauses:
    """The subject's rows of any modelled relation: by identifier column name
    (``_ID_COLUMNS``) and by the keyed ``email_hash`` / ``phone_hash``."""
    clauses: list[str] = []
    values: list[Any] = []
    by_kind = subject.by_kind()
    for kind, names in _ID_COLUMNS.items():
        kind_values = sorted(by_kind[kind])
        for col in names:
            if col in columns and kind_values:
                expr = f"lower(trim({quote_ident(col)}))" if kind == "email" else quote_ident(col)
                clauses.append(f"list_contains(?, {expr}::varchar)")
                values.append(kind_values)
    for col, plain in (("email_hash", subject.emails), ("phone_hash", subject.phones)):
        if col in columns and plain:
            clauses.append(f"list_contains(?, {col})")
            values.append(sorted(keyed_hash(v, key) for v in plain))
    return clauses, values


def quarantine_clauses(columns: Collection[str], subject: Subject) -> Clauses:
    """Quarantined records (a ``raw_record`` column) holding any of the subject's values."""
    needles = sorted(subject.contact_ids | subject.emails | subject.order_ids)
    needles += sorted(subject.anonymous_ids) + sorted(subject.phones)
    if not needles or "raw_record" not in columns:
        return [], []
    # Whole-token matches so contact "C1" does not erase "C10"'s rows.
    pattern = (
        "(^|[^A-Za-z0-9_@.+-])("
        + "|".join(_regex_escape(n) for n in needles)
        + ")($|[^A-Za-z0-9_@.+-])"
    )
    return ["regexp_matches(lower(raw_record), ?)"], [pattern.lower()]


def _delete_where(con: duckdb.DuckDBPyConnection, relation: str, clauses: Clauses) -> int:
    """Delete the rows matching any of ``clauses`` from ``relation``; the count deleted."""
    where, params = clauses
    if not where:
        return 0
    predicate = " or ".join(where)
    (n,) = con.execute(f"select count(*) from {relation} where {predicate}", params).fetchone()
    if n:
        con.execute(f"delete from {relation} where {predicate}", params)
    return n


def _delete_raw(con: duckdb.DuckDBPyConnection, subject: Subject) -> dict[str, int]:
    deleted: dict[str, int] = {}
    for table in RAW_TABLES:
        if not table_exists(con, "raw", table):
            continue
        clauses = raw_clauses(table, table_columns(con, "raw", table), subject)
        n = _delete_where(con, f"raw.{quote_ident(table)}", clauses)
        if n:
            deleted[f"raw.{table}"] = n
    return deleted


def _delete_quarantine(con: duckdb.DuckDBPyConnection, subject: Subject) -> int:
    """Quarantined raw records may hold the person's data too."""
    if not table_exists(con, "audit", "quarantine"):
        return 0
    columns = table_columns(con, "audit", "quarantine")
    return _delete_where(con, "audit.quarantine", quarantine_clauses(columns, subject))


def _regex_escape(value: str) -> str:
    return "".join("\\" + c if c in r".^$*+?{}[]\|()" else c for c in value)


def _sweep_modelled_layers(
    con: duckdb.DuckDBPyConnection, subject: Subject, key: str
) -> dict[str, int]:
    deleted: dict[str, int] = {}
    tables = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and list_contains(?, table_schema)",
        [list(_SWEPT_SCHEMAS)],
    ).fetchall()
    for schema, table in tables:
        clauses = id_clauses(table_columns(con, schema, table), subject, key)
        n = _delete_where(con, f"{schema}.{quote_ident(table)}", clauses)
        if n:
            deleted[f"{schema}.{table}"] = n
    return deleted


def ensure_erasure_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(con)
    for ddl in ERASURE_DDL:
        con.execute(ddl)


def suppression_hashes(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """All suppressed identifier hashes (privacy.keyed_hash) by kind, for set-based
    filtering at load."""
    if not table_exists(con, "audit", "erasure_suppression"):
        return {}
    has_scheme = "hash_scheme" in table_columns(con, "audit", "erasure_suppression")
    out: dict[str, set[str]] = {}
    for kind, digest in con.execute(
        "select identifier_type, identifier_hash from audit.erasure_suppression"
        + (" where hash_scheme = 'hmac-sha256'" if has_scheme else " where false")
    ).fetchall():
        out.setdefault(kind, set()).add(digest)
    return out


def legacy_suppression_count(con: duckdb.DuckDBPyConnection) -> int:
    """Suppression rows written with the retired sha256(key || 0x1f || value) digest."""
    if not table_exists(con, "audit", "erasure_suppression"):
        return 0
    if "hash_scheme" not in table_columns(con, "audit", "erasure_suppression"):
        (n,) = con.execute("select count(*) from audit.erasure_suppression").fetchone()
        return n
    (n,) = con.execute(
        "select count(*) from audit.erasure_suppression where hash_scheme is null"
    ).fetchone()
    return n


def rewrite_database(db: Path) -> None:
    """Copy ``db`` into a fresh file and swap it in: no freed block keeps erased values.

    DuckDB reuses freed blocks but does not zero them, so deleted rows stay readable in
    the file (``grep -a``) until overwritten; ``checkpoint`` does not help. ``COPY FROM
    DATABASE`` writes only live data into a new file; ``os.replace`` swaps it in
    atomically (a crash leaves either the old or the new file, plus a stray ``.rewrite``
    file the next rewrite replaces).
    """
    tmp = db.with_name(db.name + ".rewrite")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"attach {quote_literal(str(db))} as old_db (read_only)")
        con.execute(f"attach {quote_literal(str(tmp))} as new_db")
        con.execute("copy from database old_db to new_db")
        con.execute("detach new_db")
        con.execute("detach old_db")
    except (duckdb.Error, OSError) as exc:
        con.close()
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        if "no space left on device" in str(exc).lower() or getattr(exc, "errno", None) == 28:
            raise OSError(
                28,
                f"no space left on device while rewriting {db} after an erasure (needs about "
                f"the database's size free next to it); the erasure itself is committed, "
                f"free space and run apply_erasure again: it finishes the rewrite",
            ) from exc
        raise
    finally:
        con.close()
    os.replace(tmp, db)
    db.with_name(db.name + ".wal").unlink(missing_ok=True)


def drop_models(models_dir: Path) -> int:
    """Delete the fitted model files: they were trained on the erased person's rows."""
    if not models_dir.is_dir():
        return 0
    n = 0
    for entry in models_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        n += 1
    return n


def apply_erasure_requests(
    *, run_id: str | None = None, settings: Settings | None = None
) -> ErasureSummary:
    """Process every erasure request in raw.erasure_requests not yet in the log."""
    settings = settings or get_settings()
    summary = ErasureSummary()
    subjects: list[Subject] = []
    with warehouse(settings=settings) as con:
        ensure_erasure_tables(con)
        if not table_exists(con, "raw", "erasure_requests"):
            return summary
        key = settings.pii_key()
        verify_key(con, key)
        legacy = legacy_suppression_count(con)
        if legacy:
            log.error(
                "audit.erasure_suppression has %d rows hashed with the retired "
                "sha256(key || 0x1f || value) digest; ingest no longer matches them. The "
                "people of those requests (audit.erasure_log) must be erased again.",
                legacy,
            )
        pending = con.execute(
            """
            select request_id, contact_id, email, requested_at
            from raw.erasure_requests r
            where not exists (select 1 from audit.erasure_log l where l.request_id = r.request_id)
            order by requested_at, request_id
            """
        ).fetchall()
        if pending:
            # marts are about to change: the published snapshot's marts no longer count
            # as current, so the next publish copies them again (without the subject).
            # On this connection: audit.pipeline_state, the one owner of run state.
            from segment_warehouse import state

            state.renew_marts_generation(con, run_id=run_id)
        for request_id, contact_id, email, requested_at in pending:
            email = normalise_email(email)
            contact_id = contact_id.strip() if contact_id else None
            now = datetime.now(UTC)
            if not (contact_id or email):
                # Ingest never loads such a row; if one got here, say so loudly and record
                # it, rather than leave it pending forever.
                log.error("erasure %s has no contact_id or email: escalate", request_id)
                con.execute(
                    "insert into audit.erasure_log values (?, ?, ?, ?, 0, 0, ?)",
                    [request_id, requested_at, now, "", json.dumps({"escalated": "no identifier"})],
                )
                continue
            con.execute("begin transaction")
            try:
                subject = _expand_subject(con, contact_id, email)
                deleted = _delete_raw(con, subject)
                q = _delete_quarantine(con, subject)
                if q:
                    deleted["audit.quarantine"] = q
                deleted.update(_sweep_modelled_layers(con, subject, key))
                suppress = [
                    (kind, keyed_hash(value, key), request_id, now, HASH_SCHEME)
                    for kind, values in subject.suppression_values().items()
                    for value in sorted(values)
                ]
                if suppress:
                    con.executemany(
                        "insert into audit.erasure_suppression (identifier_type, "
                        "identifier_hash, request_id, suppressed_at, hash_scheme) "
                        "values (?, ?, ?, ?, ?)",
                        suppress,
                    )
                con.execute(
                    "update raw.erasure_requests set contact_id = null, email = null "
                    "where request_id = ?",
                    [request_id],
                )
                subject_hash = keyed_hash(contact_id or email or "", key)
                total = sum(deleted.values())
                con.execute(
                    "insert into audit.erasure_log values (?, ?, ?, ?, ?, ?, ?)",
                    [
                        request_id,
                        requested_at,
                        now,
                        subject_hash,
                        subject.size(),
                        total,
                        json.dumps(deleted, sort_keys=True),
                    ],
                )
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
            subjects.append(subject)
            summary.requests_processed += 1
            summary.rows_deleted += total
            summary.request_ids.append(request_id)
            log.info("erasure %s: %d rows deleted in %d tables", request_id, total, len(deleted))
        if summary.requests_processed:
            con.execute("checkpoint")
    # The marker survives a failed rewrite (disk full, crash), so the next call finishes it
    # even when no new request arrived.
    marker = settings.warehouse_db.with_name(settings.warehouse_db.name + ".rewrite-pending")
    if summary.requests_processed:
        marker.touch()
    if marker.exists():
        from segment_warehouse.publish import purge_snapshots_after_erasure
        from segment_warehouse.spark.erasure import drop_spark_files, rewrite_spark_files

        summary.models_dropped = drop_models(settings.models_dir)
        if subjects:
            swept = rewrite_spark_files(settings, subjects, settings.pii_key())
            summary.spark_files_rewritten = swept.files_rewritten
        else:  # resuming an interrupted erasure: who it erased is no longer known
            summary.spark_files_dropped = drop_spark_files(settings)
        rewrite_database(settings.warehouse_db)
        # Parquet snapshot directories no published snapshot reads (SEGMENTS_PUBLISH_FORMAT
        # =parquet); the published one is replaced by the next publish, as a DuckDB one is.
        purge_snapshots_after_erasure(settings)
        marker.unlink()
        summary.database_rewritten = True
        log.info(
            "erasure: database file rewritten, %d model file(s) dropped", summary.models_dropped
        )
    return summary
