"""The identity-merges section of the validation report."""

from __future__ import annotations

import duckdb

from segment_warehouse.validation.report import _identity_merges_section


def test_section_counts_decisions_and_samples_merges_escaped() -> None:
    con = duckdb.connect()
    con.execute("create schema audit")
    con.execute(
        """
        create table audit.identity_merges as
        select * from (values
            ('C1', 'C2', 'cus_a', 'merged', 0.9991,
             'nickname', 'exact', 'city', 'null', 'null', 'm1'),
            ('C3', 'C4', 'cus_b', 'vetoed_first_name', 0.995,
             'else', 'exact', 'postal', 'null', 'exact', 'm1'),
            ('<x>', 'C6', 'cus_c', 'merged', 0.9999,
             'exact', 'one_typo', 'postal', 'null', 'null', 'm1')
        ) as t(contact_id_l, contact_id_r, customer_id, decision, match_probability, name_level,
               birth_date_level, location_level, email_local_level, phone_level, model_version)
        """
    )
    html = _identity_merges_section(con)
    assert "<td>merged</td><td class=num>2</td>" in html
    assert "<td>vetoed_first_name</td><td class=num>1</td>" in html
    assert html.index("C1") < html.index("&lt;x&gt;")  # least certain first
    assert "<x>" not in html
    assert "C3" not in html  # only merges are sampled


def test_section_without_matcher_output() -> None:
    html = _identity_merges_section(duckdb.connect())
    assert "has not run yet" in html
