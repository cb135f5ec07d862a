"""Content rules: load, validate strictly, compile audiences to safe DuckDB SQL.

The rules file (``SEGMENTS_CONTENT_RULES``, DESIGN.md section 7) is written by
content teams, so it is untrusted input. Everything is checked before any
table is touched, and the first problem found is reported as a
:class:`RulesError` naming the rule (or slot, experiment, destination) and the
key at fault:

* the YAML itself (syntax, duplicate keys, which PyYAML would silently accept);
* the schema: known keys only, required keys present, types (a priority is an
  integer, not ``"100"`` or ``true``), id formats, unique ids, every rule on a
  declared slot, experiment dates and shares in range;
* every ``audience``: parsed with sqlglot (DuckDB dialect) into a syntax tree
  and walked against an allow-list of node types, audience columns and pure
  scalar functions. Only the validated tree is rendered back to SQL (with
  every column re-quoted), so no text from the file reaches the database
  verbatim. The rendered expression is finally bound by DuckDB against an
  empty relation of the audience columns, which catches type errors (``lower``
  of a number, ``lifecycle_stage + 1``) and checks that the result is boolean.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
import yaml
from sqlglot import exp
from sqlglot.errors import SqlglotError

# Audience columns and their DuckDB types (the relation decide builds has
# exactly these). The first ten are the DESIGN.md section 7 minimum.
AUDIENCE_COLUMNS: dict[str, str] = {
    "lifecycle_stage": "varchar",
    "rfm_segment": "varchar",
    "engagement_tier": "varchar",
    "orders_count": "bigint",
    "lifetime_revenue": "double",
    "avg_order_value": "double",
    "days_since_last_order": "bigint",
    "segment_name": "varchar",
    "purchase_probability_30d": "double",
    "churn_probability": "double",
    "recency_score": "integer",
    "frequency_score": "integer",
    "monetary_score": "integer",
    "sessions_count": "bigint",
    "page_views_count": "bigint",
    "country": "varchar",
}

# Node types an audience may contain. Anything else (subqueries, table
# functions, casts, placeholders, window functions, unknown functions) is refused.
_STRUCTURE_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.And,
    exp.Or,
    exp.Not,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.Neg,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Is,
    exp.Case,
    exp.If,
)
# The short list of pure scalar functions (deterministic, no I/O, no state).
ALLOWED_FUNCTIONS: dict[type[exp.Expression], str] = {
    exp.Lower: "lower",
    exp.Upper: "upper",
    exp.Trim: "trim",
    exp.Length: "length",
    exp.Coalesce: "coalesce",
    exp.Nullif: "nullif",
    exp.Abs: "abs",
    exp.Round: "round",
    exp.Floor: "floor",
    exp.Ceil: "ceil",
    exp.Least: "least",
    exp.Greatest: "greatest",
}
_ALLOWED_NODES = _STRUCTURE_NODES + tuple(ALLOWED_FUNCTIONS)

MAX_AUDIENCE_CHARS = 4000
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CONTENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

_TOP_KEYS = {"slots", "rules", "destinations"}
_SLOT_KEYS = {"id", "default_content", "description"}
_RULE_KEYS = {"id", "slot", "priority", "audience", "content", "experiment", "description"}
_EXPERIMENT_KEYS = {"id", "control_share", "start", "end", "window_days", "description"}
_DESTINATION_KEYS = {"id", "description", "rules", "segments", "hashed_email", "approval"}


class RulesError(ValueError):
    """The rules file is invalid; nothing was written and published decisions stay."""


@dataclass(frozen=True)
class Slot:
    id: str
    default_content: str
    description: str = ""


@dataclass(frozen=True)
class Experiment:
    id: str
    control_share: float
    start: dt.date
    end: dt.date | None
    window_days: int
    description: str = ""

    def active_on(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True)
class Rule:
    id: str
    slot: str
    priority: int
    audience: str  # as written in the file (shown in reports and docs)
    audience_sql: str  # the validated tree rendered for DuckDB
    content: str
    ordinal: int  # position in the file: breaks priority ties (first listed wins)
    experiment: Experiment | None = None
    description: str = ""
    columns: tuple[str, ...] = ()  # audience columns the expression reads


@dataclass(frozen=True)
class Destination:
    """An activation tool that receives audience exports (see exports.py)."""

    id: str
    rules: tuple[str, ...]
    segments: bool
    hashed_email: bool
    approval: str
    description: str = ""


@dataclass(frozen=True)
class RuleSet:
    path: Path
    version: str  # sha256 of the file's bytes (first 16 hex digits)
    git_blob_sha: str  # what `git hash-object` prints for the file
    slots: tuple[Slot, ...]
    rules: tuple[Rule, ...]
    destinations: tuple[Destination, ...] = field(default_factory=tuple)

    def slot(self, slot_id: str) -> Slot:
        return next(s for s in self.slots if s.id == slot_id)

    @property
    def experiments(self) -> tuple[tuple[Rule, Experiment], ...]:
        return tuple((r, r.experiment) for r in self.rules if r.experiment is not None)


# --------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise RulesError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                "(YAML would silently keep only the last one)"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _git_blob_sha(data: bytes) -> str:
    # Same as `git hash-object`: lets governance tie a decision to a commit
    # without the pipeline shelling out to git.
    return hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------
# schema helpers
# --------------------------------------------------------------------------


def _keys(raw: Any, allowed: set[str], required: set[str], where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise RulesError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(raw))
    if missing:
        raise RulesError(f"{where}: missing required key(s) {', '.join(missing)}")
    return raw


def _ident(value: Any, where: str, pattern: re.Pattern[str] = _ID) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise RulesError(
            f"{where}: {value!r} is not a valid id (lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit, at most 64 characters)"
            if pattern is _ID
            else f"{where}: {value!r} is not a valid content id (letters, digits, '_', '.', ':', "
            "'-', at most 128 characters)"
        )
    return value


def _int(value: Any, where: str, minimum: int | None = None) -> int:
    # bool is an int subclass in Python; `priority: yes` must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RulesError(f"{where}: must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise RulesError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RulesError(f"{where}: must be text, got {value!r}")
    return value


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise RulesError(f"{where}: must be a date (YYYY-MM-DD) without a time, got {value}")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise RulesError(f"{where}: must be a date YYYY-MM-DD, got {value!r}")


# --------------------------------------------------------------------------
# audiences
# --------------------------------------------------------------------------


def _node_label(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous | exp.Func):
        name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
        return f"function {name.lower()}()"
    if isinstance(node, exp.Query | exp.Subquery):
        return "a subquery"
    if isinstance(node, exp.Placeholder | exp.Parameter):
        return "a parameter placeholder"
    return f"{type(node).__name__} ({node.sql(dialect='duckdb')[:60]})"


def compile_audience(audience: str, where: str) -> tuple[str, tuple[str, ...]]:
    """Validate ``audience`` and return (DuckDB SQL, columns used); raise RulesError."""
    if not isinstance(audience, str) or not audience.strip():
        raise RulesError(f"{where}: audience must be a non-empty SQL expression")
    if len(audience) > MAX_AUDIENCE_CHARS:
        raise RulesError(f"{where}: audience is longer than {MAX_AUDIENCE_CHARS} characters")
    try:
        trees = [t for t in sqlglot.parse(audience, read="duckdb") if t is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0]
        raise RulesError(f"{where}: audience is not valid SQL: {first}") from exc
    if len(trees) != 1:
        raise RulesError(f"{where}: audience must be one expression, found {len(trees)} statements")
    tree = trees[0]
    columns: list[str] = []
    for node in tree.walk():
        if not isinstance(node, _ALLOWED_NODES):
            allowed_fns = ", ".join(sorted(ALLOWED_FUNCTIONS.values()))
            raise RulesError(
                f"{where}: audience uses {_node_label(node)}, which is not allowed "
                f"(only audience columns, literals, comparison/boolean/arithmetic operators, "
                f"IN, BETWEEN, LIKE, IS [NOT] NULL, CASE and the functions {allowed_fns})"
            )
        if isinstance(node, exp.Column):
            if node.table or node.args.get("db") or node.args.get("catalog"):
                raise RulesError(
                    f"{where}: audience column {node.sql()} must not be qualified with a table"
                )
            name = node.name.lower()
            if name not in AUDIENCE_COLUMNS:
                raise RulesError(
                    f"{where}: audience uses unknown column {node.name!r}; audience columns are "
                    f"{', '.join(AUDIENCE_COLUMNS)}"
                )
            if name not in columns:
                columns.append(name)
        if isinstance(node, exp.Like | exp.ILike) and node.args.get("escape") is not None:
            raise RulesError(f"{where}: LIKE ... ESCAPE is not supported")
    if not columns:
        raise RulesError(f"{where}: audience must refer to at least one audience column")

    # Rebuild every column as a fresh quoted identifier: only names from the
    # allow-list, spelled our way, reach DuckDB.
    def requote(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.column(node.name.lower(), quoted=True)
        return node

    rendered = tree.transform(requote).sql(dialect="duckdb", comments=False)
    _bind_check(rendered, where)
    return rendered, tuple(columns)


_BIND_LOCK = threading.Lock()
_BIND_CON: duckdb.DuckDBPyConnection | None = None


def _bind_check(sql: str, where: str) -> None:
    """Bind the expression over an empty audience relation; it must be boolean."""
    global _BIND_CON
    with _BIND_LOCK:  # one small in-memory connection, reused: opening one costs ~ms
        if _BIND_CON is None:
            con = duckdb.connect()
            cols = ", ".join(f'"{name}" {kind}' for name, kind in AUDIENCE_COLUMNS.items())
            con.execute(f"create table audience ({cols})")
            _BIND_CON = con
        try:
            described = _BIND_CON.execute(
                f"describe select ({sql}) as matches from audience"
            ).fetchall()
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            raise RulesError(f"{where}: audience cannot be evaluated: {message}") from exc
    kind = described[0][1]
    if kind != "BOOLEAN":
        raise RulesError(f"{where}: audience must be a true/false condition, it yields {kind}")


# --------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------


def parse_rules(text: str | bytes, path: Path | str = "<rules>") -> RuleSet:
    """Validate rules from text; raise :class:`RulesError` on the first problem."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    path = Path(path)
    name = path.name
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=_StrictLoader)
    except RulesError as exc:
        raise RulesError(f"{name}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RulesError(f"{name}: not UTF-8 text ({exc})") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{name}: invalid YAML: {exc}") from exc
    doc = _keys(doc, _TOP_KEYS, {"slots", "rules"}, name)

    raw_slots = doc["slots"]
    if not isinstance(raw_slots, list) or not raw_slots:
        raise RulesError(f"{name}: 'slots' must be a non-empty list")
    slots: list[Slot] = []
    for i, raw in enumerate(raw_slots):
        where = f"{name}: slot #{i + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            where = f"{name}: slot {raw['id']!r}"
        raw = _keys(raw, _SLOT_KEYS, {"id", "default_content"}, where)
        slot_id = _ident(raw["id"], f"{where}.id")
        if any(s.id == slot_id for s in slots):
            raise RulesError(f"{where}: duplicate slot id {slot_id!r}")
        slots.append(
            Slot(
                id=slot_id,
                default_content=_ident(raw["default_content"], f"{where}.default_content",
                                       _CONTENT_ID),
                description=_text(raw.get("description"), f"{where}.description"),
            )
        )
    slot_ids = {s.id for s in slots}

    raw_rules = doc["rules"]
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        raise RulesError(f"{name}: 'rules' must be a list")
    rules: list[Rule] = []
    experiment_ids: set[str] = set()
    for i, raw in enumerate(raw_rules):
        where = f"{name}: rule #{i + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            where = f"{name}: rule {raw['id']!r}"
        raw = _keys(raw, _RULE_KEYS, {"id", "slot", "priority", "audience", "content"}, where)
        rule_id = _ident(raw["id"], f"{where}.id")
        if any(r.id == rule_id for r in rules):
            raise RulesError(f"{where}: duplicate rule id {rule_id!r}")
        slot = raw["slot"]
        if slot not in slot_ids:
            raise RulesError(
                f"{where}: unknown slot {slot!r}; declared slots: {', '.join(sorted(slot_ids))}"
            )
        priority = _int(raw["priority"], f"{where}.priority")
        content = _ident(raw["content"], f"{where}.content", _CONTENT_ID)
        audience_sql, columns = compile_audience(raw["audience"], where)
        experiment = None
        if raw.get("experiment") is not None:
            experiment = _experiment(raw["experiment"], f"{where}.experiment")
            if experiment.id in experiment_ids:
                raise RulesError(f"{where}: duplicate experiment id {experiment.id!r}")
            experiment_ids.add(experiment.id)
        rules.append(
            Rule(
                id=rule_id,
                slot=slot,
                priority=priority,
                audience=raw["audience"],
                audience_sql=audience_sql,
                content=content,
                ordinal=i,
                experiment=experiment,
                description=_text(raw.get("description"), f"{where}.description"),
                columns=columns,
            )
        )

    destinations = _destinations(doc.get("destinations"), {r.id for r in rules}, name)
    return RuleSet(
        path=path,
        version=hashlib.sha256(data).hexdigest()[:16],
        git_blob_sha=_git_blob_sha(data),
        slots=tuple(slots),
        rules=tuple(rules),
        destinations=destinations,
    )


def _experiment(raw: Any, where: str) -> Experiment:
    raw = _keys(raw, _EXPERIMENT_KEYS, {"id", "control_share", "start", "window_days"}, where)
    exp_id = _ident(raw["id"], f"{where}.id")
    where = f"{where} {exp_id!r}"
    share = raw["control_share"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise RulesError(f"{where}: control_share must be a number strictly between 0 and 1, "
                         f"got {share!r}")
    start = _date(raw["start"], f"{where}.start")
    end = _date(raw["end"], f"{where}.end") if raw.get("end") is not None else None
    if end is not None and end < start:
        raise RulesError(f"{where}: end {end} is before start {start}")
    return Experiment(
        id=exp_id,
        control_share=float(share),
        start=start,
        end=end,
        window_days=_int(raw["window_days"], f"{where}.window_days", minimum=1),
        description=_text(raw.get("description"), f"{where}.description"),
    )


def _destinations(raw: Any, rule_ids: set[str], name: str) -> tuple[Destination, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RulesError(f"{name}: 'destinations' must be a list")
    out: list[Destination] = []
    for i, item in enumerate(raw):
        where = f"{name}: destination #{i + 1}"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            where = f"{name}: destination {item['id']!r}"
        item = _keys(item, _DESTINATION_KEYS, {"id"}, where)
        dest_id = _ident(item["id"], f"{where}.id")
        if any(d.id == dest_id for d in out):
            raise RulesError(f"{where}: duplicate destination id {dest_id!r}")
        rules = item.get("rules") or []
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise RulesError(f"{where}.rules: must be a list of rule ids")
        unknown = sorted(set(rules) - rule_ids)
        if unknown:
            raise RulesError(f"{where}.rules: unknown rule id(s) {', '.join(unknown)}")
        segments = item.get("segments", False)
        hashed = item.get("hashed_email", False)
        for key, value in (("segments", segments), ("hashed_email", hashed)):
            if not isinstance(value, bool):
                raise RulesError(f"{where}.{key}: must be true or false, got {value!r}")
        approval = _text(item.get("approval"), f"{where}.approval").strip()
        if hashed and not approval:
            # The governance decision: hashed emails leave the company only with
            # a recorded approval (ticket, DPIA reference) next to the opt-in.
            raise RulesError(
                f"{where}: hashed_email: true needs an 'approval' (the governance ticket or "
                "DPIA reference that approved sharing hashed emails with this destination)"
            )
        if not rules and not segments:
            raise RulesError(f"{where}: exports nothing (give 'rules' and/or 'segments: true')")
        out.append(
            Destination(
                id=dest_id,
                rules=tuple(rules),
                segments=segments,
                hashed_email=hashed,
                approval=approval,
                description=_text(item.get("description"), f"{where}.description"),
            )
        )
    return tuple(out)


def load_rules(path: Path | str | None = None) -> RuleSet:
    """Read and validate the rules file (default: ``settings.content_rules``)."""
    if path is None:
        from segment_warehouse.config import get_settings

        path = get_settings().content_rules
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise RulesError(f"content rules file not found: {path}") from exc
    except OSError as exc:
        raise RulesError(f"content rules file {path} cannot be read: {exc}") from exc
    return parse_rules(data, path)
