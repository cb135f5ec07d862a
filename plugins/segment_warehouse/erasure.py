"""Right to erasure: remove a person from every layer and keep them out.

Requests arrive as landing files under ``erasure/`` (``request_id``,
``contact_id`` or ``email``, ``requested_at``) and are loaded into
``raw.erasure_requests`` like any other source. :func:`apply_erasure_requests`
then, for every request not yet processed:

1. expands the subject to all of their identifiers: the contact ids and emails
   that match directly, plus everything the last identity resolution linked to
   the same ``customer_id`` (orders, anonymous ids, other contacts);
2. deletes matching rows from ``raw``, ``audit.quarantine`` and, by identifier
   column name, from every table in ``staging``, ``intermediate``, ``marts``
   and ``segments`` (so incremental dbt models cannot resurrect them);
3. records keyed hashes of the identifiers in ``audit.erasure_suppression`` so
   later deliveries of the same person are quarantined at load time without
   their content (see :func:`suppressed_row_reason`), and logs the request,
   without PII, in ``audit.erasure_log``;
4. blanks the identifiers in ``raw.erasure_requests`` itself.

The next ``dbt build`` and ``publish`` then produce tables without the person.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.privacy import keyed_hash
from segment_warehouse.warehouse import ensure_schemas, table_exists, warehouse

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
        identifier_hash varchar not null,
        request_id varchar not null,
        suppressed_at timestamptz not null
    )
    """,
)

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


def suppression_hash(value: str, key: str) -> str:
    """Keyed SHA-256 that DuckDB can compute natively at load time.

    ``sha256(key || chr(31) || value)`` in SQL equals this in Python, so
    ingestion can match millions of rows against the suppression list without
    a Python UDF. The key is secret, so the hashes cannot be reversed by
    hashing a dictionary of emails.
    """
    return hashlib.sha256(f"{key}\x1f{value}".encode()).hexdigest()


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

    def by_kind(self) -> dict[str, set[str]]:
        return {
            "contact_id": self.contact_ids,
            "email": self.emails,
            "anonymous_id": self.anonymous_ids,
            "order_id": self.order_ids,
            "customer_id": self.customer_ids,
        }

    def size(self) -> int:
        return sum(len(v) for v in self.by_kind().values())


@dataclass
class ErasureSummary:
    requests_processed: int = 0
    rows_deleted: int = 0
    request_ids: list[str] = field(default_factory=list)


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> set[str]:
    rows = con.execute(
        "select column_name from information_schema.columns "
        "where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return {r[0] for r in rows}


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
            select contact_id, lower(trim(email)) from raw.crm_contacts
            where list_contains(?, trim(contact_id)) or list_contains(?, lower(trim(email)))
            """,
            [sorted(subject.contact_ids), sorted(subject.emails)],
        ).fetchall()
        for cid, mail in rows:
            subject.contact_ids.add(cid.strip())
            if mail:
                subject.emails.add(mail)
    # Everything the last identity resolution linked to the same customer.
    if table_exists(con, "marts", "identity_map"):
        ids = sorted(subject.contact_ids)
        customers = con.execute(
            "select distinct customer_id from marts.identity_map "
            "where source = 'crm' and list_contains(?, source_id)",
            [ids],
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
    # Orders placed under the subject's contact ids or emails (guest checkouts).
    if table_exists(con, "raw", "transactions_orders"):
        rows = con.execute(
            """
            select order_id, lower(trim(email)) from raw.transactions_orders
            where list_contains(?, trim(contact_id)) or list_contains(?, lower(trim(email)))
            """,
            [sorted(subject.contact_ids), sorted(subject.emails)],
        ).fetchall()
        for oid, _mail in rows:
            subject.order_ids.add(oid)
    # Devices the subject logged in on (shared devices too: the person's own events go).
    if table_exists(con, "raw", "analytics_events"):
        rows = con.execute(
            """
            select distinct anonymous_id from raw.analytics_events
            where anonymous_id is not null and (
                list_contains(?, user_id)
                or list_contains(?, lower(trim(json_extract_string(traits, '$.email')))))
            """,
            [sorted(subject.contact_ids), sorted(subject.emails)],
        ).fetchall()
        subject.anonymous_ids |= {a for (a,) in rows}
    return subject


def _delete_raw(con: duckdb.DuckDBPyConnection, subject: Subject) -> dict[str, int]:
    deleted: dict[str, int] = {}
    params = {
        "contacts": sorted(subject.contact_ids),
        "emails": sorted(subject.emails),
        "anons": sorted(subject.anonymous_ids),
        "orders": sorted(subject.order_ids),
    }
    statements = {
        "raw.crm_contacts": (
            "list_contains($contacts, trim(contact_id)) "
            "or list_contains($emails, lower(trim(email)))"
        ),
        "raw.transactions_orders": (
            "list_contains($orders, order_id) or list_contains($contacts, trim(contact_id)) "
            "or list_contains($emails, lower(trim(email)))"
        ),
        "raw.analytics_events": (
            "list_contains($anons, anonymous_id) or list_contains($contacts, user_id) "
            "or list_contains($emails, lower(trim(json_extract_string(traits, '$.email'))))"
        ),
    }
    for table, predicate in statements.items():
        schema, name = table.split(".")
        if not table_exists(con, schema, name):
            continue
        used = {k: v for k, v in params.items() if f"${k}" in predicate}
        (n,) = con.execute(f"select count(*) from {table} where {predicate}", used).fetchone()
        if n:
            con.execute(f"delete from {table} where {predicate}", used)
            deleted[table] = n
    return deleted


def _delete_quarantine(con: duckdb.DuckDBPyConnection, subject: Subject) -> int:
    """Quarantined raw records may hold the person's data too."""
    needles = sorted(subject.contact_ids | subject.emails | subject.order_ids)
    needles += sorted(subject.anonymous_ids)
    if not needles or not table_exists(con, "audit", "quarantine"):
        return 0
    # Whole-token matches so contact "C1" does not erase "C10"'s rows.
    pattern = (
        "(^|[^A-Za-z0-9_@.+-])("
        + "|".join(_regex_escape(n) for n in needles)
        + ")($|[^A-Za-z0-9_@.+-])"
    )
    (n,) = con.execute(
        "select count(*) from audit.quarantine where regexp_matches(lower(raw_record), ?)",
        [pattern.lower()],
    ).fetchone()
    if n:
        con.execute(
            "delete from audit.quarantine where regexp_matches(lower(raw_record), ?)",
            [pattern.lower()],
        )
    return n


def _regex_escape(value: str) -> str:
    return "".join("\\" + c if c in r".^$*+?{}[]\|()" else c for c in value)


def _sweep_modelled_layers(
    con: duckdb.DuckDBPyConnection, subject: Subject, key: str
) -> dict[str, int]:
    deleted: dict[str, int] = {}
    email_hashes = sorted(keyed_hash(e, key) for e in subject.emails)
    tables = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and list_contains(?, table_schema)",
        [list(_SWEPT_SCHEMAS)],
    ).fetchall()
    by_kind = subject.by_kind()
    for schema, table in tables:
        cols = _columns(con, schema, table)
        clauses: list[str] = []
        params: list[list[str]] = []
        for kind, names in _ID_COLUMNS.items():
            values = sorted(by_kind[kind])
            for col in names:
                if col in cols and values:
                    expr = f"lower(trim({col}))" if kind == "email" else f'"{col}"'
                    clauses.append(f"list_contains(?, {expr}::varchar)")
                    params.append(values)
        if "email_hash" in cols and email_hashes:
            clauses.append("list_contains(?, email_hash)")
            params.append(email_hashes)
        if not clauses:
            continue
        predicate = " or ".join(clauses)
        (n,) = con.execute(
            f'select count(*) from {schema}."{table}" where {predicate}', params
        ).fetchone()
        if n:
            con.execute(f'delete from {schema}."{table}" where {predicate}', params)
            deleted[f"{schema}.{table}"] = n
    return deleted


def ensure_erasure_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(con)
    for ddl in ERASURE_DDL:
        con.execute(ddl)


def suppressed_row_reason(
    con: duckdb.DuckDBPyConnection, identifiers: dict[str, str | None], key: str
) -> str | None:
    """Reason to quarantine a newly landed row of an erased person, else None.

    ``identifiers`` maps identifier kind (contact_id, email, anonymous_id,
    order_id) to the row's value. The raw record must not be kept: callers
    store the quarantine row with ``raw_record`` null.
    """
    for kind, value in identifiers.items():
        if kind == "email":
            value = normalise_email(value)
        if not value:
            continue
        row = con.execute(
            "select request_id from audit.erasure_suppression "
            "where identifier_type = ? and identifier_hash = ? limit 1",
            [kind, suppression_hash(value.strip(), key)],
        ).fetchone()
        if row:
            return f"erased subject (erasure request {row[0]}): record not kept"
    return None


def suppression_hashes(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """All suppressed identifier hashes by kind, for set-based filtering at load."""
    if not table_exists(con, "audit", "erasure_suppression"):
        return {}
    out: dict[str, set[str]] = {}
    for kind, digest in con.execute(
        "select identifier_type, identifier_hash from audit.erasure_suppression"
    ).fetchall():
        out.setdefault(kind, set()).add(digest)
    return out


def apply_erasure_requests(
    *, run_id: str | None = None, settings: Settings | None = None
) -> ErasureSummary:
    """Process every erasure request in raw.erasure_requests not yet in the log."""
    settings = settings or get_settings()
    summary = ErasureSummary()
    with warehouse(settings=settings) as con:
        ensure_erasure_tables(con)
        if not table_exists(con, "raw", "erasure_requests"):
            return summary
        key = settings.pii_key()
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
            from segment_warehouse.publish import renew_marts_generation

            renew_marts_generation(settings)
        for request_id, contact_id, email, requested_at in pending:
            email = normalise_email(email)
            contact_id = contact_id.strip() if contact_id else None
            if not (contact_id or email):
                continue  # ingestion quarantines such rows; nothing to erase
            now = datetime.now(UTC)
            con.execute("begin transaction")
            try:
                subject = _expand_subject(con, contact_id, email)
                deleted = _delete_raw(con, subject)
                q = _delete_quarantine(con, subject)
                if q:
                    deleted["audit.quarantine"] = q
                deleted.update(_sweep_modelled_layers(con, subject, key))
                suppress = [
                    (kind, suppression_hash(value, key), request_id, now)
                    for kind, values in subject.by_kind().items()
                    if kind != "customer_id"
                    for value in sorted(values)
                ]
                if suppress:
                    con.executemany(
                        "insert into audit.erasure_suppression values (?, ?, ?, ?)", suppress
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
            summary.requests_processed += 1
            summary.rows_deleted += total
            summary.request_ids.append(request_id)
            log.info("erasure %s: %d rows deleted in %d tables", request_id, total, len(deleted))
        if summary.requests_processed:
            # Rewrite storage so deleted rows do not linger in free blocks.
            con.execute("checkpoint")
    return summary
