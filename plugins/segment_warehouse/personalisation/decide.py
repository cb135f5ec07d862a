"""The decide stage: content rules -> personalisation.* (DESIGN.md section 7).

Everything is set-based SQL in DuckDB, one statement per step:

1. ``_audience``: one row per customer with the audience columns (profiles,
   rule segments, the current cluster segment, predictions; a missing input
   gives NULL columns, and a rule on NULL matches nobody).
2. ``_matches``: for every rule, the consenting customers its validated
   audience expression selects (a ``union all`` of one ``select`` per rule).
3. ``_ranked``: per customer and slot, matching rules ordered by priority
   (highest first) then file position (first listed wins ties).
4. Experiments: winners of a running experiment's rule without an assignment
   get one, by deterministic bucketing (:func:`bucket`); existing assignments
   are never touched (insert-only, sticky).
5. ``content_decisions``: every consenting customer x every slot, replaced as
   a whole.

All writes happen in one transaction after the rules validated, and every
value is a function of (inputs, rules, as-of date): a rerun of the same day
with the same rules produces identical tables (``decided_at`` is the as-of
date, not the wall clock).

Experiment life cycle (documented in docs/personalisation.md): before
``start`` the rule is not live (nobody sees its content, so no future control
customer is exposed); between ``start`` and ``end`` matching winners are split
into control (the slot's default content) and treatment (the rule's content);
after ``end`` the rule is an ordinary rule and nobody new is assigned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field

import duckdb

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.personalisation.rules import AUDIENCE_COLUMNS, RuleSet, load_rules
from segment_warehouse.warehouse import ensure_schemas, table_columns, table_exists, warehouse

log = logging.getLogger(__name__)

# Contract tables (DESIGN.md section 7) plus the catalogue tables the API,
# exports and reports read. Per-person tables name their column customer_id
# so erasure sweeps them.
DDL: tuple[str, ...] = (
    """
    create table if not exists personalisation.content_decisions (
        customer_id varchar not null,
        slot_id varchar not null,
        content_id varchar not null,
        rule_id varchar,
        experiment_id varchar,
        variant varchar,
        decided_at timestamp not null,
        rules_version varchar not null
    )
    """,
    """
    create table if not exists personalisation.experiment_assignments (
        experiment_id varchar not null,
        customer_id varchar not null,
        variant varchar not null,
        assigned_at date not null,
        segment_name_at_assignment varchar,
        rule_id varchar not null,
        slot_id varchar not null,
        bucket double not null,
        rules_version varchar not null
    )
    """,
    """
    create table if not exists personalisation.experiments (
        experiment_id varchar not null,
        rule_id varchar not null,
        slot_id varchar not null,
        content_id varchar not null,
        default_content_id varchar not null,
        control_share double not null,
        start_date date not null,
        end_date date,
        window_days integer not null,
        rules_version varchar not null,
        first_defined_at timestamp not null,
        last_defined_at timestamp not null,
        description varchar
    )
    """,
)

_CATALOGUE_DDL: dict[str, str] = {
    "content_slots": """
        create or replace table personalisation.content_slots (
            slot_id varchar not null, default_content_id varchar not null,
            description varchar, position integer not null, rules_version varchar not null)
    """,
    "content_rules": """
        create or replace table personalisation.content_rules (
            rule_id varchar not null, slot_id varchar not null, priority integer not null,
            position integer not null, content_id varchar not null, audience varchar not null,
            audience_sql varchar not null, experiment_id varchar, experiment_state varchar,
            description varchar, rules_version varchar not null)
    """,
    "export_destinations": """
        create or replace table personalisation.export_destinations (
            destination_id varchar not null, rule_ids varchar[] not null,
            segments boolean not null, sends_email_sha256 boolean not null, approval varchar,
            description varchar, rules_version varchar not null)
    """,
}


@dataclass
class DecideResult:
    run_id: str
    as_of: str
    rules_version: str
    rules_git_blob_sha: str
    customers: int
    consenting_customers: int
    decisions: int
    slots: int
    rules: int
    new_assignments: int
    assignments_total: int
    by_slot: dict[str, dict[str, int]] = field(default_factory=dict)  # slot -> content -> n
    report: str | None = None


def bucket(experiment_id: str, customer_id: str) -> float:
    """Portable reference of the SQL bucketing: a number in [0, 1).

    First 8 hex digits of sha256(experiment_id || ':' || customer_id) over
    16^8; ``bucket < control_share`` means control. Any engine or language
    with SHA-256 reproduces an assignment from the two ids.
    """
    digest = hashlib.sha256(f"{experiment_id}:{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) / 16**8


# DuckDB form of bucket(); Spark SQL: conv(substr(sha2(concat(e, ':', c), 256), 1, 8), 16, 10).
_BUCKET_SQL = "('0x' || substr(sha256({e} || ':' || {c}), 1, 8))::bigint / 4294967296.0"


def _audience_sql(con: duckdb.DuckDBPyConnection) -> str:
    """SELECT of the audience relation; absent inputs become typed NULL columns."""
    if not table_exists(con, "marts", "customer_profiles"):
        raise RuntimeError(
            "marts.customer_profiles does not exist: run segment_pipeline before decide"
        )
    sources = {
        "p": ("marts", "customer_profiles"),
        "r": ("marts", "customer_rule_segments"),
        "s": ("segments", "customer_segments"),
        "f": ("segments", "customer_predictions"),
    }
    present = {
        alias: table_columns(con, schema, table) if table_exists(con, schema, table) else set()
        for alias, (schema, table) in sources.items()
    }
    # Where each audience column comes from, in order of preference.
    preference = {"days_since_last_order": "r", "segment_name": "s",
                  "purchase_probability_30d": "f", "churn_probability": "f"}
    select = ["p.customer_id", "p.marketing_consent"]
    for name, kind in AUDIENCE_COLUMNS.items():
        alias = preference.get(name, "p")
        if name in present[alias]:
            select.append(f'cast({alias}."{name}" as {kind}) as "{name}"')
        else:
            select.append(f'cast(null as {kind}) as "{name}"')
    joins = []
    # One row per customer per input even if an input had duplicates (min:
    # deterministic), so a customer can never be decided twice.
    if "customer_id" in present["r"] and "days_since_last_order" in present["r"]:
        joins.append(
            "left join (select customer_id, min(days_since_last_order) as days_since_last_order "
            "from marts.customer_rule_segments group by customer_id) r using (customer_id)"
        )
    if "customer_id" in present["s"] and "segment_name" in present["s"]:
        joins.append(
            "left join (select customer_id, min(segment_name) as segment_name "
            "from segments.customer_segments group by customer_id) s using (customer_id)"
        )
    pred_cols = [c for c in ("purchase_probability_30d", "churn_probability") if c in present["f"]]
    if "customer_id" in present["f"] and pred_cols:
        aggs = ", ".join(f'min("{c}") as "{c}"' for c in pred_cols)
        joins.append(
            f"left join (select customer_id, {aggs} from segments.customer_predictions "
            "group by customer_id) f using (customer_id)"
        )
    return (
        "select " + ", ".join(select) + " from marts.customer_profiles p " + " ".join(joins)
    )


def _experiment_state(rule_experiment, day: dt.date) -> str | None:
    if rule_experiment is None:
        return None
    if day < rule_experiment.start:
        return "pending"
    if rule_experiment.end is not None and day > rule_experiment.end:
        return "ended"
    return "running"


def decide(*, run_id: str, as_of: str, settings: Settings | None = None) -> DecideResult:
    """Evaluate the content rules for ``as_of``; write personalisation.*.

    Raises :class:`~segment_warehouse.personalisation.rules.RulesError` before
    opening the warehouse when the rules file is invalid, so the previous
    decisions stay in place (in the warehouse and in the published snapshot).
    """
    settings = settings or get_settings()
    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError as exc:
        raise ValueError(f"as_of must be YYYY-MM-DD, got {as_of!r}") from exc
    rules = load_rules(settings.content_rules)

    with warehouse(settings=settings) as con:
        ensure_schemas(con)
        for ddl in DDL:
            con.execute(ddl)
        result = _decide(con, rules, run_id=run_id, day=day)
        try:
            from segment_warehouse.personalisation.report import write_report

            result.report = str(write_report(con, settings=settings))
        except Exception:  # the report must never fail a run that wrote its decisions
            log.exception("personalisation report could not be written")
    log.info(
        "decide %s (rules %s): %d consenting of %d customers, %d decisions, %d new assignments",
        as_of, rules.version, result.consenting_customers, result.customers, result.decisions,
        result.new_assignments,
    )
    return result


def _load_rule_tables(con: duckdb.DuckDBPyConnection, rules: RuleSet, day: dt.date) -> None:
    con.execute(
        "create or replace temp table _slots (slot_id varchar, default_content_id varchar, "
        "description varchar, position integer)"
    )
    con.executemany(
        "insert into _slots values (?, ?, ?, ?)",
        [[s.id, s.default_content, s.description, i] for i, s in enumerate(rules.slots)],
    )
    con.execute(
        "create or replace temp table _rules (rule_id varchar, slot_id varchar, priority integer, "
        "position integer, content_id varchar, audience varchar, audience_sql varchar, "
        "experiment_id varchar, experiment_state varchar, control_share double, "
        "start_date date, end_date date, window_days integer, description varchar, "
        "experiment_description varchar)"
    )
    if rules.rules:
        con.executemany(
            "insert into _rules values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [
                    r.id, r.slot, r.priority, r.ordinal, r.content, r.audience, r.audience_sql,
                    r.experiment.id if r.experiment else None,
                    _experiment_state(r.experiment, day),
                    r.experiment.control_share if r.experiment else None,
                    r.experiment.start if r.experiment else None,
                    r.experiment.end if r.experiment else None,
                    r.experiment.window_days if r.experiment else None,
                    r.description,
                    r.experiment.description if r.experiment else None,
                ]
                for r in rules.rules
            ],
        )


def _decide(
    con: duckdb.DuckDBPyConnection, rules: RuleSet, *, run_id: str, day: dt.date
) -> DecideResult:
    version = rules.version
    decided_at = dt.datetime.combine(day, dt.time())
    _load_rule_tables(con, rules, day)
    con.execute(f"create or replace temp table _audience as {_audience_sql(con)}")
    # Each audience_sql is a tree that passed the allow-list and was rendered
    # by sqlglot (rules.compile_audience); the rule id is a bound parameter.
    if rules.rules:
        parts = [
            f"select customer_id, ?::varchar as rule_id from _audience "
            f"where marketing_consent and ({r.audience_sql})"
            for r in rules.rules
        ]
        con.execute(
            "create or replace temp table _matches as " + " union all ".join(parts),
            [r.id for r in rules.rules],
        )
    else:
        con.execute(
            "create or replace temp table _matches (customer_id varchar, rule_id varchar)"
        )
    con.execute(
        """
        create or replace temp table _ranked as
        select m.customer_id, r.*,
               row_number() over (
                   partition by m.customer_id, r.slot_id order by r.priority desc, r.position
               ) as rank_in_slot
        from _matches m
        join _rules r using (rule_id)
        where r.experiment_state is distinct from 'pending'
        """
    )
    bucket_sql = _BUCKET_SQL.format(e="w.experiment_id", c="w.customer_id")

    con.execute("begin transaction")
    try:
        before = con.execute(
            "select count(*) from personalisation.experiment_assignments"
        ).fetchone()[0]
        # Sticky, insert-only: a customer already assigned keeps the variant.
        con.execute(
            f"""
            insert into personalisation.experiment_assignments
            select w.experiment_id, w.customer_id,
                   case when {bucket_sql} < w.control_share then 'control' else 'treatment' end,
                   ?::date, a.segment_name, w.rule_id, w.slot_id, {bucket_sql}, ?
            from _ranked w
            join _audience a using (customer_id)
            where w.rank_in_slot = 1 and w.experiment_state = 'running'
              and not exists (
                  select 1 from personalisation.experiment_assignments e
                  where e.experiment_id = w.experiment_id and e.customer_id = w.customer_id)
            order by w.experiment_id, w.customer_id
            """,
            [day, version],
        )
        con.execute(
            """
            create or replace table personalisation.content_decisions as
            with winners as (
                select w.customer_id, w.slot_id, w.rule_id, w.content_id,
                       case when w.experiment_state = 'running' then w.experiment_id end
                           as experiment_id,
                       case when w.experiment_state = 'running' then e.variant end as variant
                from _ranked w
                left join personalisation.experiment_assignments e
                  on e.experiment_id = w.experiment_id and e.customer_id = w.customer_id
                where w.rank_in_slot = 1
            )
            select a.customer_id, s.slot_id,
                   case when w.variant = 'control' then s.default_content_id
                        else coalesce(w.content_id, s.default_content_id) end as content_id,
                   w.rule_id, w.experiment_id, w.variant,
                   ?::timestamp as decided_at, ?::varchar as rules_version
            from _audience a
            cross join _slots s
            left join winners w on w.customer_id = a.customer_id and w.slot_id = s.slot_id
            where a.marketing_consent
            order by a.customer_id, s.position
            """,
            [decided_at, version],
        )
        _write_experiments(con, rules, decided_at)
        _write_catalogue(con, rules)
        _write_stats(con, rules, day)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise

    customers, consenting = con.execute(
        "select count(*), count(*) filter (where marketing_consent) from _audience"
    ).fetchone()
    decisions = con.execute("select count(*) from personalisation.content_decisions").fetchone()[0]
    total = con.execute("select count(*) from personalisation.experiment_assignments").fetchone()[0]
    by_slot: dict[str, dict[str, int]] = {}
    for slot_id, content_id, n in con.execute(
        "select slot_id, content_id, count(*) from personalisation.content_decisions "
        "group by all order by all"
    ).fetchall():
        by_slot.setdefault(slot_id, {})[content_id] = n
    for name in ("_matches", "_ranked", "_audience", "_rules", "_slots"):
        con.execute(f"drop table if exists {name}")
    return DecideResult(
        run_id=run_id,
        as_of=day.isoformat(),
        rules_version=version,
        rules_git_blob_sha=rules.git_blob_sha,
        customers=customers,
        consenting_customers=consenting,
        decisions=decisions,
        slots=len(rules.slots),
        rules=len(rules.rules),
        new_assignments=total - before,
        assignments_total=total,
        by_slot=by_slot,
    )


def _write_experiments(
    con: duckdb.DuckDBPyConnection, rules: RuleSet, decided_at: dt.datetime
) -> None:
    """One row per experiment ever defined; the latest definition wins.

    A backfill (an as-of date before the last definition) only widens
    first_defined_at; it never rolls the definition back.
    """
    con.execute(
        """
        create or replace temp table _experiments_now as
        select r.experiment_id, r.rule_id, r.slot_id, r.content_id,
               s.default_content_id, r.control_share, r.start_date, r.end_date,
               r.window_days, r.experiment_description as description
        from _rules r join _slots s using (slot_id)
        where r.experiment_id is not null
        """
    )
    con.execute(
        """
        create or replace temp table _experiments_next as
        with joined as (
            select coalesce(n.experiment_id, o.experiment_id) as experiment_id,
                   n.experiment_id is not null
                   and (o.experiment_id is null or $at::timestamp >= o.last_defined_at)
                       as take_new,
                   n.experiment_id is not null as defined_now,
                   n.rule_id as n_rule_id, n.slot_id as n_slot_id, n.content_id as n_content_id,
                   n.default_content_id as n_default_content_id,
                   n.control_share as n_control_share, n.start_date as n_start_date,
                   n.end_date as n_end_date, n.window_days as n_window_days,
                   n.description as n_description,
                   o.rule_id, o.slot_id, o.content_id, o.default_content_id, o.control_share,
                   o.start_date, o.end_date, o.window_days, o.rules_version,
                   o.first_defined_at, o.last_defined_at, o.description
            from _experiments_now n
            full outer join personalisation.experiments o on o.experiment_id = n.experiment_id
        )
        select experiment_id,
               if(take_new, n_rule_id, rule_id) as rule_id,
               if(take_new, n_slot_id, slot_id) as slot_id,
               if(take_new, n_content_id, content_id) as content_id,
               if(take_new, n_default_content_id, default_content_id) as default_content_id,
               if(take_new, n_control_share, control_share) as control_share,
               if(take_new, n_start_date, start_date) as start_date,
               if(take_new, n_end_date, end_date) as end_date,
               if(take_new, n_window_days, window_days) as window_days,
               if(take_new, $version, rules_version) as rules_version,
               -- least/greatest skip NULLs in DuckDB: a new experiment takes the as-of date
               least(first_defined_at, if(defined_now, $at::timestamp, null)) as first_defined_at,
               greatest(last_defined_at, if(defined_now, $at::timestamp, null))
                   as last_defined_at,
               if(take_new, n_description, description) as description
        from joined
        """,
        {"version": rules.version, "at": decided_at},
    )
    con.execute("delete from personalisation.experiments")
    con.execute(
        "insert into personalisation.experiments by name "
        "select * from _experiments_next order by experiment_id"
    )
    con.execute("drop table _experiments_now")
    con.execute("drop table _experiments_next")


def _write_catalogue(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> None:
    for ddl in _CATALOGUE_DDL.values():
        con.execute(ddl)
    con.execute(
        "insert into personalisation.content_slots "
        "select slot_id, default_content_id, description, position, ? from _slots "
        "order by position",
        [rules.version],
    )
    con.execute(
        "insert into personalisation.content_rules "
        "select rule_id, slot_id, priority, position, content_id, audience, audience_sql, "
        "experiment_id, experiment_state, description, ? from _rules order by position",
        [rules.version],
    )
    if rules.destinations:
        con.executemany(
            "insert into personalisation.export_destinations values (?, ?, ?, ?, ?, ?, ?)",
            [
                [d.id, list(d.rules), d.segments, d.hashed_email, d.approval or None,
                 d.description, rules.version]
                for d in rules.destinations
            ],
        )


def _write_stats(con: duckdb.DuckDBPyConnection, rules: RuleSet, day: dt.date) -> None:
    """Aggregates for the report: no customer ids, so nothing here needs erasure."""
    con.execute(
        """
        create or replace table personalisation.rule_stats as
        select r.slot_id, r.rule_id, r.priority, r.position, r.experiment_id,
               r.experiment_state,
               count(m.customer_id) as matched_customers,
               count(*) filter (where k.rank_in_slot = 1) as decided_customers,
               count(*) filter (where k.rank_in_slot > 1) as shadowed_customers,
               ?::date as as_of_date, ?::varchar as rules_version
        from _rules r
        left join _matches m using (rule_id)
        left join _ranked k on k.customer_id = m.customer_id and k.rule_id = r.rule_id
        group by all
        order by r.position
        """,
        [day, rules.version],
    )
    con.execute(
        """
        create or replace table personalisation.rule_overlap as
        select lo.slot_id, lo.rule_id, hi.rule_id as shadowed_by_rule_id,
               count(*) as customers, ?::varchar as rules_version
        from _ranked lo
        join _ranked hi
          on hi.customer_id = lo.customer_id and hi.slot_id = lo.slot_id and hi.rank_in_slot = 1
        where lo.rank_in_slot > 1
        group by all
        order by lo.slot_id, lo.rule_id, customers desc, shadowed_by_rule_id
        """,
        [rules.version],
    )
    con.execute(
        """
        create table if not exists personalisation.decision_runs (
            as_of_date date not null, rules_version varchar not null,
            rules_git_blob_sha varchar not null, rules_path varchar,
            customers bigint, consenting_customers bigint, decisions bigint,
            assignments_on_date bigint)
        """
    )
    con.execute("delete from personalisation.decision_runs where as_of_date = ?", [day])
    con.execute(
        """
        insert into personalisation.decision_runs
        select ?::date, ?, ?, ?,
               (select count(*) from _audience),
               (select count(*) from _audience where marketing_consent),
               (select count(*) from personalisation.content_decisions),
               (select count(*) from personalisation.experiment_assignments
                where assigned_at = ?::date)
        """,
        [day, rules.version, rules.git_blob_sha, str(rules.path.name), day],
    )
    # Keep the rows in date order whatever order the days ran in (a backfill
    # reruns an older day), so equal contents mean an identical table.
    con.execute(
        "create or replace temp table _runs as "
        "select * from personalisation.decision_runs order by as_of_date"
    )
    con.execute("delete from personalisation.decision_runs")
    con.execute("insert into personalisation.decision_runs select * from _runs order by as_of_date")
    con.execute("drop table _runs")


def withdraw_without_consent(*, settings: Settings | None = None) -> int:
    """Drop kept decisions of customers who no longer consent; returns how many rows.

    When the rules file is rejected the previous decisions stay in place, but
    consent always wins: a withdrawal (or a customer who left the marts) must
    not keep receiving personalised content because a content edit failed.
    """
    settings = settings or get_settings()
    with warehouse(settings=settings) as con:
        if not table_exists(con, "personalisation", "content_decisions"):
            return 0
        (removed,) = con.execute(
            """
            delete from personalisation.content_decisions d
            where not exists (
                select 1 from marts.customer_profiles p
                where p.customer_id = d.customer_id and p.marketing_consent
            )
            """
        ).fetchone()
    if removed:
        log.warning("removed %d kept decisions of customers without consent", removed)
    return int(removed)
