"""warehouse.py helpers."""

from __future__ import annotations

import duckdb

from segment_warehouse.warehouse import quote_ident


def test_quote_ident_names_any_table_and_nothing_else() -> None:
    con = duckdb.connect()
    try:
        for name in ("plain", 'odd "name"', "semi; drop table x", "select"):
            con.execute(f"create table {quote_ident(name)} (v integer)")
            con.execute(f"insert into {quote_ident(name)} values (1)")
            assert con.execute(f"select count(*) from {quote_ident(name)}").fetchall() == [(1,)]
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        assert tables == {"plain", 'odd "name"', "semi; drop table x", "select"}
    finally:
        con.close()
