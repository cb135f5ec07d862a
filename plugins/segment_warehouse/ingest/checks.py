"""Contract checks as SQL: each returns the first violation of a row as text, else NULL.

Bounds (docs/governance.md, "Landing-zone rules"): a timestamp must lie in
[``TIMESTAMP_MIN``, ``TIMESTAMP_MAX``) - ``9999-12-31`` would win every "latest value" race
forever (a consent withdrawal included), year 1 or BC dates are typos; an amount must be
below ``AMOUNT_MAX`` (staging's ``decimal(18, 4)`` holds less than 1e14, so a larger amount
would silently become NULL there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from segment_warehouse.ingest.specs import (
    ANALYTICS_FIELDS,
    ANALYTICS_ID_FIELDS,
    ANALYTICS_IDENTIFIERS,
    ANALYTICS_OBJECT_FIELDS,
    EVENT_TYPES,
    SourceSpec,
)
from segment_warehouse.ingest.suppression import ERASED_REASON, erased_condition

TIMESTAMP_MIN = "1900-01-01"
TIMESTAMP_MAX = "2100-01-01"
AMOUNT_MAX = 1e12


def sql_str(value: str) -> str:
    from segment_warehouse.warehouse import quote_literal

    return quote_literal(value)


def quoted(expr: str) -> str:
    """SQL for ``'value'`` in a reason, shortened so one bad cell cannot bloat the audit."""
    return f"'''' || left({expr}, 100) || ''''"


def missing(expr: str) -> str:
    return f"coalesce(trim({expr}), '') = ''"


def bad_timestamp(expr: str) -> str:
    # try_cast alone also accepts 'epoch', 'infinity', ...; the contract says ISO-8601.
    return (
        f"not (regexp_matches({expr}, '^\\s*\\d{{4}}-\\d{{2}}-\\d{{2}}') "
        f"and try_cast({expr} as timestamptz) is not null)"
    )


def out_of_range_timestamp(expr: str) -> str:
    """True for a parseable timestamp outside the bound (evaluated after bad_timestamp).

    Compares the date as written (it starts with ``YYYY-MM-DD``, bad_timestamp checked
    that): a string comparison, where a second timestamp cast per value cost a tenth of
    the load.
    """
    # The plain comparison decides almost every row; ltrim only for leading blanks.
    return (
        f"not (({expr} >= '{TIMESTAMP_MIN}' and {expr} < '{TIMESTAMP_MAX}') "
        f"or (ltrim({expr}) >= '{TIMESTAMP_MIN}' and ltrim({expr}) < '{TIMESTAMP_MAX}'))"
    )


def bad_decimal(expr: str) -> str:
    return f"not regexp_full_match({expr}, '\\s*[+-]?(\\d+(\\.\\d*)?|\\.\\d+)\\s*')"


def _timestamp_whens(c: str, expr: str) -> list[tuple[str, str]]:
    return [
        (
            f"not {missing(expr)} and {bad_timestamp(expr)}",
            f"'unparseable timestamp in {c}: ' || {quoted(expr)}",
        ),
        (
            f"not {missing(expr)} and {out_of_range_timestamp(expr)}",
            f"'timestamp out of range in {c}: ' || {quoted(expr)} "
            f"|| ' (allowed from {TIMESTAMP_MIN} to before {TIMESTAMP_MAX})'",
        ),
    ]


def csv_checks(
    spec: SourceSpec,
    col: Callable[[str], str],
    currencies: Sequence[str],
    suppress_erased: bool = False,
) -> str:
    """CASE expression giving the first contract violation of a CSV row, else NULL."""
    whens: list[tuple[str, str]] = []
    if suppress_erased and spec.identifiers:
        # First, so an erased person's row is never kept even when it is also malformed.
        ids = {kind: col(c) for kind, c in spec.identifiers}
        whens.append((erased_condition(ids), sql_str(ERASED_REASON)))
    whens += [(missing(col(c)), sql_str(f"missing required field: {c}")) for c in spec.required]
    if spec.one_of_required:
        names = " or ".join(spec.one_of_required)
        whens.append(
            (
                " and ".join(missing(col(c)) for c in spec.one_of_required),
                sql_str(f"missing required field: {names} (one is required)"),
            )
        )
    for c in spec.timestamps:
        whens += _timestamp_whens(c, col(c))
    for c in spec.amounts:
        whens.append(
            (
                f"not {missing(col(c))} and {bad_decimal(col(c))}",
                f"'invalid decimal in {c}: ' || {quoted(col(c))}",
            )
        )
        whens.append(
            (
                f"not {missing(col(c))} and cast(trim({col(c)}) as double) < 0",
                f"'negative {c}: ' || trim({col(c)})",
            )
        )
        whens.append(
            (
                f"not {missing(col(c))} and cast(trim({col(c)}) as double) >= {AMOUNT_MAX:.0f}",
                f"'amount out of range in {c}: ' || left(trim({col(c)}), 100) "
                f"|| ' (must be below {AMOUNT_MAX:.0e})'",
            )
        )
    for c, values in spec.enumerations:
        allowed = ", ".join(sql_str(v) for v in values)
        whens.append(
            (
                f"coalesce(lower(trim({col(c)})), '') not in ({allowed})",
                f"'unknown {c}: ' || {quoted(col(c))} || ' (expected {', '.join(values)})'",
            )
        )
    if spec.currency_column:
        c = spec.currency_column
        currency_list = ", ".join(sql_str(v) for v in currencies)
        whens.append(
            (
                f"coalesce(upper(trim({col(c)})), '') not in ({currency_list})",
                f"'unknown {c}: ' || left({col(c)}, 100)",
            )
        )
    for c in spec.positive_integers:
        v = col(c)
        whens.append(
            (
                f"not {missing(v)} and not (regexp_full_match({v}, '\\s*\\+?\\d+\\s*') "
                f"and try_cast(trim({v}) as hugeint) >= 1)",
                f"'invalid {c}: ' || {quoted(v)} || ' (expected an integer >= 1)'",
            )
        )
    body = "\n".join(f"    when {cond} then {reason}" for cond, reason in whens)
    return f"case\n{body}\n    else null end"


def jsonl_checks(suppress_erased: bool, j: str = "_j") -> str:
    """CASE expression giving the first contract violation of a parsed JSONL line, else NULL.

    Evaluated over ``line`` and the typed struct ``_j``. Nested CASEs and conjunctions keep
    the extra parses (json_valid, json_type) to the few rows that need them: an identifier
    is only looked up again when its text could be a boolean, array or object (a string
    "true" reads the same as true once extracted as VARCHAR).
    """
    erased = ""
    if suppress_erased:
        cond = erased_condition(dict(ANALYTICS_IDENTIFIERS))
        erased = f"when {j} is not null and ({cond}) then {sql_str(ERASED_REASON)}"
    # The type checks of identifiers and nested objects come last, behind one cheap
    # pre-condition: most rows skip them in a single test, and a NULL from the inner CASE
    # (a string "true") rightly means "no violation" as every other check has passed.
    id_suspect = {
        f: f"""(starts_with({j}."{f}", '[') or starts_with({j}."{f}", '{{')
                 or {j}."{f}" in ('true', 'false'))"""
        for f in ANALYTICS_ID_FIELDS
    }
    obj_suspect = {f: f"""not starts_with({j}."{f}", '{{')""" for f in ANALYTICS_OBJECT_FIELDS}
    inner = "\n".join(
        [
            f"""                when {cond}
                    and json_type(line, '$."{f}"') in ('BOOLEAN', 'ARRAY', 'OBJECT')
                    then 'invalid {f}: expected a string, got '
                         || lower(json_type(line, '$."{f}"'))"""
            for f, cond in id_suspect.items()
        ]
        + [
            f"""                when {cond}
                    then 'invalid {f}: expected an object, got ' || lower(json_type({j}."{f}"))"""
            for f, cond in obj_suspect.items()
        ]
    )
    any_suspect = " or ".join([*id_suspect.values(), *obj_suspect.values()])
    type_checks = f"""        when {any_suspect} then case
{inner}
            end"""
    ts = f'{j}."timestamp"'
    return f"""case
        {erased}
        when {j} is null then case
            when trim(line, ' ' || chr(9) || chr(13) || chr(10)) = '' then 'blank line'
            when not json_valid(line) then 'invalid JSON'
            else 'not a JSON object: ' || lower(json_type(line)) end
        when (case when {j}."messageId" is null then json_type(line) <> 'OBJECT' else false end)
            then 'not a JSON object: ' || lower(json_type(line))
        when {missing(f'{j}."messageId"')} then 'missing required field: messageId'
        when {missing(f'{j}."type"')} then 'missing required field: type'
        when {j}."type" not in ({", ".join(sql_str(t) for t in EVENT_TYPES)})
            then 'invalid type: ' || {quoted(f'{j}."type"')}
                 || ' (expected {", ".join(EVENT_TYPES)})'
        when {missing(ts)} then 'missing required field: timestamp'
        when {bad_timestamp(ts)}
            then 'unparseable timestamp in timestamp: ' || {quoted(ts)}
        when {out_of_range_timestamp(ts)}
            then 'timestamp out of range in timestamp: ' || {quoted(ts)}
                 || ' (allowed from {TIMESTAMP_MIN} to before {TIMESTAMP_MAX})'
{type_checks}
        else null end"""


def jsonl_struct() -> str:
    return "{" + ", ".join(f'"{f}": "{t}"' for f, _, t in ANALYTICS_FIELDS) + "}"


def jsonl_raw_columns(j: str = "_j") -> str:
    """The raw table's columns from the parsed struct, in raw column order."""
    return ", ".join(
        f"nullif({j}.\"{f}\", '')" if t == "VARCHAR" else f'{j}."{f}"'
        for f, _, t in ANALYTICS_FIELDS
    )
