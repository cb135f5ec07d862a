"""The SQL form of the keyed hash must equal the Python form bit for bit.

Marts are pseudonymised by DuckDB (``pseudonymise()`` macro) while erasure
looks people up with Python's ``keyed_hash``: a mismatch would make an erased
person's hashed rows unfindable.
"""

from __future__ import annotations

import re

import duckdb
import pytest

from segment_warehouse.dbt_plugin import register_udfs
from segment_warehouse.privacy import keyed_hash, keyed_hash_macro_sql

VALUES = [
    "alice@example.com",
    "+442071838750",
    "",
    " padded ",
    "ünïcødé ✓ 漢字",
    "x" * 1000,
]


@pytest.mark.parametrize(
    "key",
    ["test-secret", "", "k" * 64, "a key longer than the 64-byte SHA-256 block " * 3, "clé ✓"],
)
def test_sql_macro_equals_python_hmac(key: str) -> None:
    con = duckdb.connect()
    try:
        register_udfs(con, key)
        got = con.execute(
            "select v, pseudonymise(v) from unnest(?::varchar[]) as t(v)", [VALUES]
        ).fetchall()
        (null_hash,) = con.execute("select pseudonymise(null::varchar)").fetchone()
    finally:
        con.close()
    assert dict(got) == {v: keyed_hash(v, key) for v in VALUES}
    assert null_hash is None


def test_macro_is_temporary_and_keeps_key_out_of_the_database(tmp_path) -> None:
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    try:
        register_udfs(con, "very-secret-key")
        con.execute("create table t as select pseudonymise('a@b.c') as h")
    finally:
        con.close()
    con = duckdb.connect(str(db))
    try:
        assert con.execute("select h from t").fetchone()[0] == keyed_hash(
            "a@b.c", "very-secret-key"
        )
        with pytest.raises(duckdb.CatalogException):
            con.execute("select pseudonymise('a@b.c')")
    finally:
        con.close()
    stored = db.read_bytes()
    padded_keys = re.findall(
        r"unhex\('([0-9a-f]{128})'\)", keyed_hash_macro_sql("f", "very-secret-key")
    )
    assert len(padded_keys) == 2
    assert b"very-secret-key" not in stored
    assert not any(pad.encode() in stored or bytes.fromhex(pad) in stored for pad in padded_keys)


def test_find_pii_like_in_python_and_duckdb() -> None:
    from segment_warehouse.privacy import PII_LIKE_REGEX, find_pii_like

    samples = {
        "https://shop.example/?utm_medium=email&email=alice%40example.com": ["alice%40example.com"],
        "contact bob.b@example.co.uk or +44 20 7946 0958": [
            "bob.b@example.co.uk",
            "+44 20 7946 0958",
        ],
        "https://shop.example/product/98765432?page=2": [],
        "newsletter_2026": [],
    }
    con = duckdb.connect()
    for text, expected in samples.items():
        assert find_pii_like(text) == expected, text
        (hit,) = con.execute("select regexp_matches(?, ?)", [text, PII_LIKE_REGEX]).fetchone()
        assert hit == bool(expected), text
    assert find_pii_like(None) == []


def test_key_fingerprint_identifies_the_key_without_revealing_it() -> None:
    from segment_warehouse.privacy import key_fingerprint

    assert key_fingerprint("k1") == key_fingerprint("k1") != key_fingerprint("k2")
    assert "k1" not in key_fingerprint("k1")


def test_phone_key_agrees_across_formats() -> None:
    from segment_warehouse.privacy import phone_key

    assert phone_key("+14155550100") == phone_key("(415) 555-0100") == "4155550100"
    assert phone_key("0044 20.7946.0958") == phone_key("020 7946 0958") == "2079460958"
    assert phone_key("12-34") is None and phone_key(None) is None


def test_phone_normalisation_never_yields_a_too_short_e164() -> None:
    """A French national number in an identify trait (no country) starts with "01",
    which the default region US reads as the "011" international prefix; what is left
    (+63 84473) is no phone and must not reach the valid_e164 data test (fresh zone2
    seed 101 failed the whole dbt build on it)."""
    from segment_warehouse.dbt_plugin import normalise_phone_value

    assert normalise_phone_value("01 16 38 44 73") is None
    assert normalise_phone_value("01.15.35.25.63", "") is None
    assert normalise_phone_value("01 16 38 44 73", "FR") == "+33116384473"
    assert normalise_phone_value("(415) 555-0100") == "+14155550100"
