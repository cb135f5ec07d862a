"""DuckDB built-ins the project SQL calls that Spark lacks, as plain Python.

The Spark session registers these under DuckDB's names (``session.
register_udfs``), so ``macros/identity.sql`` reads the same on both targets.
Each one is checked against DuckDB's own function (tests/spark/
test_spark_functions.py, which needs no Spark).
"""

from __future__ import annotations

import unicodedata
from typing import Any

# What DuckDB's strip_accents drops (utf8proc's STRIPMARK): every combining
# mark, of all three categories.
_MARK_CATEGORIES = frozenset({"Mn", "Mc", "Me"})


def strip_accents(text: str | None) -> str | None:
    """DuckDB's ``strip_accents``: canonical decomposition, marks removed, recomposed.

    Equal to DuckDB 1.x/2.x for every code point Python's Unicode database
    (14.0 in Python 3.11) knows; marks assigned in later Unicode versions are
    kept here and dropped by DuckDB (none occur in names).
    """
    if text is None:
        return None
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in _MARK_CATEGORIES)
    return unicodedata.normalize("NFC", kept)


def duckdb_jaro_winkler(left: Any, right: Any) -> Any:
    """DuckDB's ``jaro_winkler_similarity`` over two pandas Series (an Arrow batch).

    Evaluated by DuckDB itself, so the Spark target scores exactly as the
    DuckDB one. The jaro_winkler of Splink's similarity jar differs: with an
    odd number of out-of-order matched characters it counts half a
    transposition (amanda / amnda: 0.8756) where DuckDB (rapidfuzz) rounds the
    half down (0.9022), and that moves pairs across the 0.88 / 0.9 levels.
    """
    import duckdb
    import pandas as pd
    import pyarrow as pa

    batch = pa.table(
        {"l": pa.array(left, type=pa.string()), "r": pa.array(right, type=pa.string())}
    )
    con = duckdb.connect()
    try:
        con.register("batch", batch)
        result = con.sql("select jaro_winkler_similarity(l, r) as s from batch").to_arrow_table()
    finally:
        con.close()
    # object dtype keeps null as null: NaN would compare greater than any
    # threshold in Spark
    return pd.Series(result.column("s").to_pylist(), dtype="object")
