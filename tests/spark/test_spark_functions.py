"""The Spark target's stand-ins for DuckDB functions, and the runner's phase plan.

No Spark here (fast, part of `make test`): each function the Spark session
registers under a DuckDB name is checked against DuckDB itself.
"""

from __future__ import annotations

import unicodedata

import duckdb
import pandas as pd
import pytest

from segment_warehouse.identity.matching import load_model
from segment_warehouse.spark.functions import duckdb_jaro_winkler, strip_accents
from segment_warehouse.spark.identity import spark_model
from segment_warehouse.spark.runner import identity_phases


def test_strip_accents_equals_duckdb_for_every_assigned_code_point() -> None:
    # code points Python's Unicode database does not know yet are left out
    # (DuckDB's is newer; see functions.strip_accents)
    chars = [
        chr(c)
        for c in range(0x20, 0x30000)
        if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"
    ]
    chars += ["Müller", "José", "Zoë", "Ærø", "İlker", "Łukasz", "François", "Dvořák"]
    con = duckdb.connect()
    duck = con.execute("select s, strip_accents(s) from unnest(?) as t(s)", [chars]).fetchall()
    different = [(s, d, strip_accents(s)) for s, d in duck if strip_accents(s) != d]
    assert not different, different[:10]
    assert strip_accents(None) is None


def test_jaro_winkler_is_duckdbs_with_nulls_kept() -> None:
    left = pd.Series(["amanda", "martha", None, "dixon"])
    right = pd.Series(["amnda", "marhta", "x", "dicksonx"])
    got = duckdb_jaro_winkler(left, right).tolist()
    # amanda / amnda: Splink's jar gives 0.8756 (half transpositions counted)
    assert got[0] == pytest.approx(0.9022222222222223, abs=1e-15)
    assert got[2] is None  # null, not NaN (NaN is above every threshold in Spark)
    con = duckdb.connect()
    expected = con.execute(
        "select jaro_winkler_similarity('martha', 'marhta'),"
        " jaro_winkler_similarity('dixon', 'dicksonx')"
    ).fetchone()
    assert (got[1], got[3]) == expected


def test_spark_model_keeps_the_trained_parameters() -> None:
    model = load_model()
    spark = spark_model(model, 1e-4)
    assert spark["sql_dialect"] == "spark"
    assert spark["probability_two_random_records_match"] == 1e-4
    conditions = [
        lv["sql_condition"] for c in spark["comparisons"] for lv in c["comparison_levels"]
    ]
    assert not [c for c in conditions if "list_has_any" in c]
    assert any("arrays_overlap(first_name_forms_l, first_name_forms_r)" in c for c in conditions)
    for trained, translated in zip(model["comparisons"], spark["comparisons"], strict=True):
        for a, b in zip(trained["comparison_levels"], translated["comparison_levels"], strict=True):
            assert (a.get("m_probability"), a.get("u_probability")) == (
                b.get("m_probability"),
                b.get("u_probability"),
            )


def test_identity_phases_split_a_selection_around_the_runner_steps() -> None:
    phases = identity_phases(
        ["build", "--select", "+staging", "int_x", "--indirect-selection", "cautious",
         "--exclude", "foo"]
    )  # fmt: skip
    assert [step for step, _ in phases] == [None, "pairs", "components"]
    first, pairs, components = (args for _, args in phases)
    assert first == [
        "build", "--indirect-selection", "cautious", "--select", "+staging", "int_x",
        "--exclude", "foo", "int_contact_match_pairs+",
    ]  # fmt: skip
    assert pairs[pairs.index("--select") + 1 : pairs.index("--exclude")] == [
        "+staging,int_contact_match_pairs+", "int_x,int_contact_match_pairs+",
    ]  # fmt: skip
    assert pairs[-2:] == ["foo", "int_identity_components+"]
    assert components[-3:] == ["int_x,int_identity_components+", "--exclude", "foo"]
    # no selection: the whole project, in the same three phases
    assert [args for _, args in identity_phases(["build"])] == [
        ["build", "--exclude", "int_contact_match_pairs+"],
        ["build", "--select", "int_contact_match_pairs+", "--exclude", "int_identity_components+"],
        ["build", "--select", "int_identity_components+"],
    ]
