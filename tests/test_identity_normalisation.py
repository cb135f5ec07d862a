"""Identity normalisation macros (dbt_project/macros/identity.sql) on DuckDB.

The macros are rendered with plain Jinja (the same syntax dbt uses) and the
SQL runs on an in-memory DuckDB, so each rule is checked on the engine that
runs it, without a dbt build.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import jinja2
import pytest

MACROS = Path(__file__).resolve().parents[1] / "dbt_project" / "macros"


def _render(call: str) -> str:
    text = (MACROS / "parsing.sql").read_text() + (MACROS / "identity.sql").read_text()
    return jinja2.Environment().from_string(text + "{{ " + call + " }}").render().strip()


def _eval(call: str, value: object) -> object:
    con = duckdb.connect()
    sql = _render(call)
    return con.execute(f"select {sql} from (select ?::varchar as v) as t", [value]).fetchone()[0]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("José", "Jose"),
        ("Müller", "Mueller"),
        ("Müller", "Muller"),
        ("Jürgen", "Juergen"),
        ("Lefèvre", "LEFEVRE"),
        ("O'Brien", "obrien"),
        ("Ann-Marie", "Ann Marie"),
        ("Strauß", "Strauss"),
        ("Søren", "Soren"),
        ("Łukasz", "Lukasz"),
        ("Zoë", "Zoe"),
    ],
)
def test_name_variants_share_a_key(a: str, b: str) -> None:
    assert _eval("fold_name('v')", a) == _eval("fold_name('v')", b)


def test_different_names_and_other_scripts_keep_distinct_keys() -> None:
    assert _eval("fold_name('v')", "Anna") != _eval("fold_name('v')", "Hannah")
    assert _eval("fold_name('v')", "山田") == "山田"  # letters of any script survive
    assert _eval("fold_name('v')", " -' ") is None


@pytest.mark.parametrize(
    ("raw", "mailbox"),
    [
        (" J.Doe+Shop@GoogleMail.com ", "jdoe@gmail.com"),
        ("j.o.h.n.doe@gmail.com", "johndoe@gmail.com"),
        ("john.doe+newsletter@gmail.com", "johndoe@gmail.com"),
        ("jane.doe+x@outlook.com", "jane.doe@outlook.com"),
        ("jane+x@hotmail.co.uk", "jane@hotmail.co.uk"),
        ("jane+x@icloud.com", "jane@icloud.com"),
        ("jane+x@proton.me", "jane@proton.me"),
        # a +tag is a subaddress everywhere; dots only fold for Gmail
        ("j.doe+x@example.com", "j.doe@example.com"),
        ("first.last+shop@yahoo.com", "first.last@yahoo.com"),
        ("+only@example.com", "+only@example.com"),
        ("   ", None),
    ],
)
def test_email_mailbox(raw: str, mailbox: str | None) -> None:
    assert _eval("clean_email('v')", raw) == mailbox


@pytest.mark.parametrize(
    ("left", "right", "conflict"),
    [
        ("1980-03-04", "1980-03-04", False),
        ("1980-03-04", "1980-04-03", False),  # day and month swapped
        ("1980-03-04", "1980-03-07", False),  # one typed digit
        ("1980-03-04", "1908-03-04", False),  # neighbouring digits swapped
        ("1980-03-04", None, False),  # unknown is no conflict
        ("1961-07-30", "1990-11-12", True),  # father and son
        ("1980-03-04", "1981-05-04", True),
    ],
)
def test_birth_dates_conflict(left: str, right: str | None, conflict: bool) -> None:
    con = duckdb.connect()
    sql = _render("birth_dates_conflict('l', 'r')")
    got = con.execute(
        f"select {sql} from (select ?::date as birth_date) as l,"
        " (select ?::date as birth_date) as r",
        [left, right],
    ).fetchone()[0]
    assert got is conflict
