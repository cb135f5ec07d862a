"""The keyed hash that pseudonymises personal identifiers.

One definition for every stage: dbt's ``pseudonymise()`` macro (``email_hash``,
``phone_hash`` in the marts) and erasure (which finds a person's rows by those
hashes) must produce the same digest for the same value. ``keyed_hash`` is the
Python form; ``keyed_hash_macro_sql`` builds the same HMAC in DuckDB SQL.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from segment_warehouse.config import ConfigError

if TYPE_CHECKING:
    import duckdb


def keyed_hash(value: str, key: str) -> str:
    """HMAC-SHA256 of an identifier (hex): stable, not reversible without the key."""
    return hmac.new(key.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()


_SHA256_BLOCK_BYTES = 64


def keyed_hash_macro_sql(name: str, key: str) -> str:
    """``create temp macro <name>(value)``: :func:`keyed_hash` computed by DuckDB.

    HMAC-SHA256 as RFC 2104 defines it, sha256((K ^ opad) || sha256((K ^ ipad) ||
    value)), on DuckDB's vectorised ``sha256``: a Python UDF hashed the ~2 M
    emails and phones of 1 M customers at ~0.4 M values/s on one core. The
    padded key is derived material as sensitive as the key, so the macro is
    TEMP (lives in one connection's memory, never in the database file) and is
    created by the caller, never written into dbt's compiled SQL or logs.
    """
    raw = key.encode("utf-8")
    if len(raw) > _SHA256_BLOCK_BYTES:
        raw = hashlib.sha256(raw).digest()
    padded = raw.ljust(_SHA256_BLOCK_BYTES, b"\0")
    inner = bytes(b ^ 0x36 for b in padded).hex()
    outer = bytes(b ^ 0x5C for b in padded).hex()
    return (
        f"create or replace temp macro {name}(value) as "
        f"sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}') || encode(value))))"
    )


_PHONE_KEY_DIGITS = 10
_FINGERPRINT_MESSAGE = "segment-warehouse pii key fingerprint v1"


def phone_key(value: str | None) -> str | None:
    """The form of a phone number the erasure suppression list hashes: its last 10 digits.

    Delivered phones come in every format (``+14155550100``, ``(415) 555-0100``, ``0044
    20.7946.0958``); the trailing national digits agree across them where the prefixes
    do not. Fewer than 6 digits is no phone number.
    """
    if not value:
        return None
    digits = re.sub(r"[^0-9]", "", value)
    return digits[-_PHONE_KEY_DIGITS:] if len(digits) >= 6 else None


def key_fingerprint(key: str) -> str:
    """An HMAC of a constant under ``key``: identifies the key, reveals nothing of it."""
    return keyed_hash(_FINGERPRINT_MESSAGE, key)


class PiiKeyMismatch(ConfigError):
    """SEGMENTS_PII_KEY differs from the key the warehouse's hashes were made with."""


def verify_key(con: duckdb.DuckDBPyConnection, key: str) -> None:
    """Record the key's fingerprint on first use; refuse a different key afterwards.

    Every published hash and the erasure suppression list depend on the key: with a new
    key an erased person delivered again would no longer be recognised. Needs
    ``audit.pii_key_fingerprint`` (``warehouse.ensure_schemas``).
    """
    fingerprint = key_fingerprint(key)
    row = con.execute(
        "select fingerprint from audit.pii_key_fingerprint order by recorded_at limit 1"
    ).fetchone()
    if row is None:
        con.execute(
            "insert into audit.pii_key_fingerprint values (?, ?)", [fingerprint, datetime.now(UTC)]
        )
        return
    if row[0] != fingerprint:
        raise PiiKeyMismatch(
            "SEGMENTS_PII_KEY is not the key this warehouse was built with (its fingerprint "
            "in audit.pii_key_fingerprint differs). Every pseudonymised hash and the erasure "
            "suppression list depend on it, so the run stops: restore the original key. "
            "(Changing keys deliberately needs a rebuild from an empty warehouse.)"
        )


# PII-like values in free text, for the publish guard's content scan. The same patterns
# as the staging scrub (stg_analytics__events): an email address (also %40-encoded), and
# a phone number written internationally (+ or %2B, then at least 7 digits with the usual
# separators). National formats without a prefix are not matched: they look like order
# numbers and prices too often to scan for.
EMAIL_LIKE_REGEX = r"[A-Za-z0-9._%+-]+(@|%40)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
PHONE_LIKE_REGEX = r"(\+|%2[bB])[0-9][0-9 .()%-]{5,}[0-9]"
PII_LIKE_REGEX = f"({EMAIL_LIKE_REGEX})|({PHONE_LIKE_REGEX})"
_PII_LIKE = re.compile(PII_LIKE_REGEX)


def find_pii_like(text: str | None) -> list[str]:
    """Email- or phone-like substrings of ``text`` (empty when none).

    ``PII_LIKE_REGEX`` is RE2-compatible, so a DuckDB scan can use it directly:
    ``regexp_matches(col, ?)`` with the pattern as a bound parameter.
    """
    if not text:
        return []
    return [m.group(0) for m in _PII_LIKE.finditer(text)]
