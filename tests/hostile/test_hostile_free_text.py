"""PII in free text (issue 15): URLs, referrers and campaign fields are scrubbed in staging.

Renders the scrub expressions of ``stg_analytics__events.sql`` with stand-ins for dbt's
functions and evaluates them in DuckDB, so the patterns the model ships are the ones
tested (the whole model runs in the dbt and end-to-end tests).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import pytest

DBT_PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"
MODEL = DBT_PROJECT / "models/staging/analytics/stg_analytics__events.sql"
# engine-portable macros (adapter.dispatch): rendered with their DuckDB bodies
PORTABLE = DBT_PROJECT / "macros/portable.sql"
COLUMNS = ("page_url", "page_referrer", "campaign_source", "campaign_medium", "campaign_name")


def _scrub_expressions() -> dict[str, str]:
    def stub(*args: Any, **kwargs: Any) -> str:
        return str(args[0]) if args else ""

    env = jinja2.Environment(undefined=jinja2.ChainableUndefined)
    names = ["config", "source", "ref", "where_loaded_since_last_run"]
    names += ["clean_text", "clean_lower", "clean_email", "to_utc_timestamp", "phone_to_e164"]
    names += ["is_placeholder_email"]
    portable = env.from_string(PORTABLE.read_text()).module
    duckdb_bodies = {
        name.removeprefix("default__"): getattr(portable, name)
        for name in dir(portable)
        if name.startswith("default__")
    }
    sql = env.from_string(MODEL.read_text()).render(
        **{n: stub for n in names}, **duckdb_bodies, this="this", is_incremental=lambda: False
    )
    out = {
        m.group(2): m.group(1)
        for m in re.finditer(
            r"(case when regexp_matches\(context_values.*?\bend) as (\w+)", sql, re.S
        )
    }
    assert sorted(out) == sorted(COLUMNS)
    return out


_EXPRESSIONS = _scrub_expressions()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "https://shop.example/?utm_medium=email&email=alice%40example.com&x=1",
            "https://shop.example/?utm_medium=email&email=[redacted]&x=1",
        ),
        ("https://shop.example/?ref=bob@example.co.uk", "https://shop.example/?ref=[email]"),
        ("https://x.example/?phone=%2B14155550100&a=2", "https://x.example/?phone=[redacted]&a=2"),
        ("winter sale, call +44 20 7946 0958", "winter sale, call [phone]"),
        ("leak3@example.com", "[email]"),
        (
            "https://shop.example/product/98765432?page=2",
            "https://shop.example/product/98765432?page=2",
        ),
        ("email", "email"),
        (None, None),
    ],
)
def test_pii_in_urls_referrers_and_campaigns_is_scrubbed(
    value: str | None, expected: str | None
) -> None:
    con = duckdb.connect()
    for column, expr in _EXPRESSIONS.items():
        index = int(re.search(r"context_values\[(\d)\]", expr).group(1))  # type: ignore[union-attr]
        values = [None] * 7
        values[index - 1] = value
        (got,) = con.execute(
            f"select {expr} from (select ?::varchar[] as context_values)", [values]
        ).fetchone()
        assert got == expected, column
