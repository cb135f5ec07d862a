"""The keyed hash that pseudonymises personal identifiers.

One definition for every stage: dbt's ``pseudonymise()`` UDF (``email_hash``,
``phone_hash`` in the marts) and erasure (which finds a person's rows by those
hashes) must produce the same digest for the same value.
"""

from __future__ import annotations

import hashlib
import hmac


def keyed_hash(value: str, key: str) -> str:
    """HMAC-SHA256 of an identifier (hex): stable, not reversible without the key."""
    return hmac.new(key.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()
