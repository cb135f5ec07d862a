"""Keeping erased people out at load time (see segment_warehouse.erasure).

``audit.erasure_suppression`` holds keyed hashes (``privacy.keyed_hash``, the one HMAC of
the project) of every identifier of every erased person. At load, a row whose identifiers
hash into that list is quarantined with reason :data:`ERASED_REASON` and no raw_record.
The HMAC runs in DuckDB as a TEMP macro (``privacy.keyed_hash_macro_sql``): the key
material lives in the connection's memory only, never in SQL text, the catalog or logs.

Malformed rows (wrong field count, invalid JSON) cannot be matched by column, so their raw
text is scanned in Python for identifier-like tokens (:func:`mentions_erased`) before it
is written to ``audit.quarantine``.
"""

from __future__ import annotations

import re

import duckdb

from segment_warehouse.config import Settings
from segment_warehouse.privacy import keyed_hash, keyed_hash_macro_sql, phone_key, verify_key

ERASED_REASON = "erased subject (right to erasure): record not kept"
HASH_MACRO = "segments_erasure_hash"
KINDS: tuple[str, ...] = ("contact_id", "email", "anonymous_id", "order_id", "phone")


def load_suppression(
    con: duckdb.DuckDBPyConnection, settings: Settings
) -> tuple[dict[str, frozenset[str]], str] | None:
    """Expose the suppressed identifier hashes to SQL; None when nobody has been erased.

    Sets one session variable per identifier kind and creates the TEMP hash macro.
    Returns the hashes (for the raw-record scan) and the key.
    """
    from segment_warehouse.erasure import suppression_hashes

    hashes = suppression_hashes(con)
    if not hashes:
        return None
    key = settings.pii_key()
    verify_key(con, key)
    con.execute(keyed_hash_macro_sql(HASH_MACRO, key))
    for kind in KINDS:
        con.execute(f"set variable segments_erased_{kind} = ?", [sorted(hashes.get(kind, ()))])
    return {k: frozenset(v) for k, v in hashes.items()}, key


def normalised_sql(kind: str, expr: str) -> str:
    """SQL normalisation of an identifier before hashing (same as erasure's Python)."""
    if kind == "email":
        return f"lower(trim({expr}))"
    if kind == "phone":
        # privacy.phone_key: the last 10 digits (with or without country code alike).
        digits = f"regexp_replace({expr}, '[^0-9]', '', 'g')"
        return f"(case when length({digits}) >= 6 then right({digits}, 10) end)"
    return f"trim({expr})"


def erased_condition(identifiers: dict[str, str]) -> str:
    """SQL condition: any of the row's identifiers (kind -> expression) was erased."""
    parts = []
    for kind, expr in identifiers.items():
        digest = f"{HASH_MACRO}({normalised_sql(kind, expr)})"
        parts.append(
            f"coalesce(list_contains(getvariable('segments_erased_{kind}'), {digest}), false)"
        )
    return " or ".join(parts)


_TOKEN = re.compile(r"[^\s,;\"'{}\[\]|<>()=&?]+")
_PHONE = re.compile(r"\+?\d[\d\s().\-]{5,}\d")


def mentions_erased(raw: str, suppressed: dict[str, frozenset[str]], key: str) -> bool:
    """Whether the raw text holds an identifier of an erased person (any kind)."""
    every = frozenset().union(*suppressed.values())
    candidates: set[str] = set()
    for token in _TOKEN.findall(raw):
        candidates.add(token)
        candidates.add(token.lower())
        # key:value pairs (JSON) and URL parameters glue the value to its name.
        for part in re.split(r"[:/]", token):
            if part:
                candidates.add(part)
                candidates.add(part.lower())
    phones = suppressed.get("phone", frozenset())
    if phones:
        for match in _PHONE.findall(raw):
            pk = phone_key(match)
            if pk and keyed_hash(pk, key) in phones:
                return True
    return any(keyed_hash(c, key) in every for c in candidates)
