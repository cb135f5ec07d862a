"""The keyed hash that pseudonymises personal identifiers.

One definition for every stage: dbt's ``pseudonymise()`` macro (``email_hash``,
``phone_hash`` in the marts) and erasure (which finds a person's rows by those
hashes) must produce the same digest for the same value. ``keyed_hash`` is the
Python form; ``keyed_hash_macro_sql`` builds the same HMAC in DuckDB SQL.
"""

from __future__ import annotations

import hashlib
import hmac


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
