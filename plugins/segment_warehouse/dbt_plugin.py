"""dbt-duckdb plugin: functions registered on every dbt connection and cursor.

Configured in ``dbt_project/profiles.yml``::

    plugins:
      - module: segment_warehouse.dbt_plugin

* ``pseudonymise(value varchar) -> varchar``: HMAC-SHA256 (hex) keyed with
  :meth:`Settings.pii_key`, a TEMP macro over DuckDB's own ``sha256``
  (:func:`segment_warehouse.privacy.keyed_hash_macro_sql`). The key material
  lives only in this process's connections; it is never written into a model's
  SQL, so it never reaches ``target/``, dbt logs or the database file.
* ``normalise_phone(phone varchar, country varchar) -> varchar``: E.164 via
  ``phonenumbers`` using ``country`` (ISO2) as the default region, US when
  missing or unknown; null when the number does not parse or has an impossible
  length for its country ("possible", not "valid": see normalise_phone_value).
  An Arrow (vectorised) UDF: DuckDB hands over whole vectors, and the per-value
  work is memoised, so a phone repeated on many rows is parsed once per process.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Any

import phonenumbers
import pyarrow as pa
from dbt.adapters.duckdb.plugins import BasePlugin
from duckdb import DuckDBPyConnection

from segment_warehouse.config import get_settings
from segment_warehouse.privacy import keyed_hash_macro_sql

DEFAULT_REGION = "US"
_CACHE_SIZE = 1 << 21  # ~2 M distinct values per process

_SUPPORTED_REGIONS: frozenset[str] = frozenset(phonenumbers.SUPPORTED_REGIONS)
# The shortest E.164 number kept (country code + national number): what the
# valid_e164 data test and the SQL fast path accept. phonenumbers calls a few
# shorter ones "possible", e.g. a French "01 16 38 44 73" read with the default
# region as US "011" international dialling: +63 84473, nobody's phone.
MIN_E164_DIGITS = 8


@lru_cache(maxsize=_CACHE_SIZE)
def normalise_phone_value(phone: str | None, country: str | None = None) -> str | None:
    """One phone number to E.164, or None when unparseable or of impossible length."""
    if phone is None:
        return None
    text = phone.strip()
    if not text:
        return None
    region = (country or "").strip().upper()
    if region not in _SUPPORTED_REGIONS:
        region = DEFAULT_REGION
    # "0044 20 ..." is an international prefix written with 00.
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    # "Possible" (right length for the country), not "valid": validity rejects
    # real-looking but unallocated ranges such as the 555 numbers common in
    # exports and test data, and a phone only needs to compare equal here.
    if not phonenumbers.is_possible_number(parsed):
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164 if len(e164) - 1 >= MIN_E164_DIGITS else None


def _arrow_normalise_phone(phones: pa.Array, countries: pa.Array) -> pa.Array:
    return pa.array(
        [
            normalise_phone_value(p, c)
            for p, c in zip(phones.to_pylist(), countries.to_pylist(), strict=True)
        ],
        type=pa.string(),
    )


def register_udfs(conn: DuckDBPyConnection, pii_key: str | None = None) -> None:
    """Register ``pseudonymise`` and ``normalise_phone`` on ``conn``.

    Also used by tests and by other stages that need the same functions on
    their own DuckDB connection.
    """
    key = pii_key if pii_key is not None else get_settings().pii_key()
    with contextlib.suppress(Exception):  # not registered yet
        conn.remove_function("normalise_phone")
    conn.execute(keyed_hash_macro_sql("pseudonymise", key))
    conn.create_function(
        "normalise_phone",
        _arrow_normalise_phone,
        ["VARCHAR", "VARCHAR"],
        "VARCHAR",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )


class Plugin(BasePlugin):
    """dbt-duckdb plugin that registers the warehouse UDFs on each connection."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        # Resolve the key once, early, so a missing SEGMENTS_PII_KEY fails the
        # run before any model is built.
        self._pii_key = get_settings().pii_key()

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        register_udfs(conn, self._pii_key)

    def configure_cursor(self, cursor: DuckDBPyConnection) -> None:
        # A cursor is a connection of its own: temp macros do not carry over.
        cursor.execute(keyed_hash_macro_sql("pseudonymise", self._pii_key))
