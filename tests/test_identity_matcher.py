"""The Splink matcher: committed model, scoring, level keys, training regularisation."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from segment_warehouse.identity import matching
from segment_warehouse.identity.train import LEVEL_M_FLOORS, M_FLOOR, U_PRIORS, regularise


def _features(rows: list[dict]) -> pa.Table:
    out = []
    for r in rows:
        first, last, dob = r.get("first"), r.get("last"), r.get("dob")
        forms = [first, *r.get("canon", [])] if first else None
        out.append(
            {
                "contact_id": r["id"],
                "first_name_key": first,
                "last_name_key": last,
                "first_name_forms": forms,
                "full_name_key": f"{first} {last}" if first and last else None,
                "birth_date": dob,
                "birth_date_text": dob.isoformat() if dob else None,
                "birth_date_swapped": (
                    f"{dob.year:04d}-{dob.day:02d}-{dob.month:02d}"
                    if dob and dob.day <= 12 and dob.day != dob.month else None
                ),
                "birth_year": dob.year if dob else None,
                "birth_month": dob.month if dob else None,
                "birth_day": dob.day if dob else None,
                "birth_day_month_set": (
                    min(dob.day, dob.month) * 100 + max(dob.day, dob.month) if dob else None
                ),
                "gender": r.get("gender"),
                "city_key": r.get("city"),
                "postal_key": r.get("postal"),
                "email_local": r.get("email"),
                "phone_e164": r.get("phone"),
            }
        )
    schema = pa.schema(
        [
            ("contact_id", pa.string()), ("first_name_key", pa.string()),
            ("last_name_key", pa.string()), ("first_name_forms", pa.list_(pa.string())),
            ("full_name_key", pa.string()), ("birth_date", pa.date32()),
            ("birth_date_text", pa.string()), ("birth_date_swapped", pa.string()),
            ("birth_year", pa.int64()), ("birth_month", pa.int64()), ("birth_day", pa.int64()),
            ("birth_day_month_set", pa.int64()), ("gender", pa.string()), ("city_key", pa.string()),
            ("postal_key", pa.string()), ("email_local", pa.string()), ("phone_e164", pa.string()),
        ]
    )
    return pa.Table.from_pylist(out, schema=schema)


def _population() -> list[dict]:
    # background people so term frequencies and blocks look like real data
    firsts = ["anna", "liam", "noah", "emma", "mia", "leon", "hugo", "nora", "paul", "lena"]
    lasts = ["smith", "weber", "jansen", "kelly", "rossi", "novak", "evans", "green"]
    rows = []
    for i in range(200):
        rows.append(
            {
                "id": f"P{i:03d}", "first": firsts[i % 10], "last": lasts[i % 8],
                "dob": date(1950 + i % 40, 1 + i % 12, 1 + i % 28),
                "city": ["berlin", "paris", "leeds"][i % 3], "postal": f"{10000 + i % 50}",
            }
        )
    return rows


@pytest.fixture(scope="module")
def scored() -> dict[tuple[str, str], dict]:
    rows = [
        *_population(),
        # one person: nickname, day and month swapped, same place
        {"id": "D1", "first": "robert", "last": "brown", "dob": date(1981, 3, 4),
         "city": "berlin", "postal": "10115"},
        {"id": "D2", "first": "bob", "last": "brown", "canon": ["robert"],
         "dob": date(1981, 4, 3), "city": "berlin", "postal": "10115"},
        # one person: first and last name transposed
        {"id": "S1", "first": "martin", "last": "keller", "dob": date(1975, 9, 21),
         "city": "paris", "postal": "75001"},
        {"id": "S2", "first": "keller", "last": "martin", "dob": date(1975, 9, 21),
         "city": "paris", "postal": "75001"},
        # twins: one surname, birth date, address and phone, different first names
        {"id": "T1", "first": "emily", "last": "walsh", "dob": date(2001, 2, 3),
         "city": "leeds", "postal": "LS14DY", "phone": "+441130000001"},
        {"id": "T2", "first": "oscar", "last": "walsh", "dob": date(2001, 2, 3),
         "city": "leeds", "postal": "LS14DY", "phone": "+441130000001"},
        # a household: one surname, address and landline, first names alike
        # only by Jaro-Winkler 0.7 (one of them without a birth date)
        {"id": "H1", "first": "patricia", "last": "moore", "dob": date(1962, 5, 14),
         "city": "leeds", "postal": "LS29JT", "phone": "+441130000002"},
        {"id": "H2", "first": "victoria", "last": "moore",
         "city": "leeds", "postal": "LS29JT", "phone": "+441130000002"},
        # one person: a typed first name
        {"id": "Y1", "first": "samantha", "last": "novak", "dob": date(1990, 7, 1),
         "city": "paris", "postal": "75002"},
        {"id": "Y2", "first": "smantha", "last": "novak", "dob": date(1990, 7, 1),
         "city": "paris", "postal": "75002"},
        # one person: the duplicate has no birth date, a new email and a typed
        # surname; only first name and postal code are intact
        {"id": "M1", "first": "siobhan", "last": "thompson", "dob": date(1956, 6, 22),
         "city": "leeds", "postal": "LS19QQ", "email": "siobhan.t"},
        {"id": "M2", "first": "siobhan", "last": "thomposn",
         "city": "leeds", "postal": "LS19QQ", "email": "sio.thompson"},
        # one person: a typed surname and day and month swapped, moved
        {"id": "W1", "first": "hanna", "last": "schulz", "dob": date(1985, 3, 7),
         "city": "berlin", "postal": "10117"},
        {"id": "W2", "first": "hanna", "last": "schultz", "dob": date(1985, 7, 3),
         "city": "paris", "postal": "75011"},
        # one person: names swapped and the surname (now the first name) typed
        {"id": "V1", "first": "nacoya", "last": "white", "dob": date(1926, 8, 26),
         "city": "young", "postal": "2594"},
        {"id": "V2", "first": "whit", "last": "nacoya", "dob": date(1926, 8, 26),
         "city": "yount", "postal": "2594"},
        # one person: the duplicate lost its surname
        {"id": "U1", "first": "imogen", "last": "braithwaite", "dob": date(1908, 1, 31),
         "city": "nhill", "postal": "3418"},
        {"id": "U2", "first": "imogen", "dob": date(1908, 1, 31),
         "city": "nhill", "postal": "3418"},
        # one person: first name typed, surname replaced
        {"id": "R1", "first": "jessica", "last": "hollis", "dob": date(1977, 2, 9),
         "city": "sale", "postal": "3850"},
        {"id": "R2", "first": "jesica", "last": "delaney", "dob": date(1977, 2, 9),
         "city": "sale", "postal": "3850"},
    ]
    pairs = matching.predict_pairs(_features(rows), min_probability=0.0)
    return {(r["contact_id_l"], r["contact_id_r"]): r for r in pairs.to_pylist()}


def test_nickname_with_swapped_birth_date_is_a_likely_match(scored: dict) -> None:
    pair = scored[("D1", "D2")]
    assert pair["match_probability"] > 0.99
    assert pair["name_level"] == "nickname"
    assert pair["birth_date_level"] == "day_month_swapped"


def test_transposed_names_are_recognised(scored: dict) -> None:
    pair = scored[("S1", "S2")]
    assert pair["name_level"] == "swapped"
    assert pair["match_probability"] > 0.9


def test_twins_are_scored_with_their_conflicting_first_names(scored: dict) -> None:
    # the score alone may be high (surname, date, address, phone agree);
    # int_contact_matches vetoes on the first-name level reported here
    assert scored[("T1", "T2")]["name_level"] in {"last_exact_only", "else"}


def test_household_first_names_alike_only_loosely_conflict(scored: dict) -> None:
    # Patricia / Victoria are two people; the guard vetoes last_exact_only
    assert scored[("H1", "H2")]["name_level"] == "last_exact_only"


def test_a_typed_first_name_is_similar(scored: dict) -> None:
    assert scored[("Y1", "Y2")]["name_level"] == "last_exact_first_similar"


def test_a_dateless_duplicate_at_the_same_postal_code_is_scored(scored: dict) -> None:
    # reached by the first name + postal code blocking rule alone
    pair = scored[("M1", "M2")]
    assert pair["birth_date_level"] == "null"
    assert pair["location_level"] == "postal_and_city"


def test_a_typed_surname_with_day_and_month_swapped_is_scored(scored: dict) -> None:
    # reached by the first name + birth year + day/month set rule alone
    pair = scored[("W1", "W2")]
    assert pair["name_level"] == "fuzzy"
    assert pair["birth_date_level"] == "day_month_swapped"


def test_swapped_names_with_a_typo_are_recognised(scored: dict) -> None:
    # reached by the first name = surname + birth date blocking rule
    pair = scored[("V1", "V2")]
    assert pair["name_level"] == "swapped_fuzzy"
    assert pair["match_probability"] > 0.9


def test_a_missing_surname_is_no_first_name_conflict(scored: dict) -> None:
    # the guard vetoes last_exact_only and else; a lost surname is neither
    assert scored[("U1", "U2")]["name_level"] == "last_missing"


def test_a_typed_first_name_with_another_surname_is_its_own_level(scored: dict) -> None:
    assert scored[("R1", "R2")]["name_level"] == "first_similar_last_differs"


def test_strangers_are_not_likely_matches(scored: dict) -> None:
    strangers = [p for k, p in scored.items() if k[0].startswith("P") and k[1].startswith("P")]
    assert strangers
    assert max(p["match_probability"] for p in strangers) < 0.99


def test_pairs_are_ordered_and_carry_level_keys(scored: dict) -> None:
    for (left, right), pair in scored.items():
        assert left < right
        for name, keys in matching.COMPARISON_LEVELS.items():
            assert pair[f"{name}_level"] in keys


def test_committed_model_matches_the_specification() -> None:
    model = matching.load_model()
    spec = matching.splink_settings()
    assert [r["blocking_rule"] for r in model["blocking_rules_to_generate_predictions"]] == [
        r["blocking_rule"] for r in spec["blocking_rules_to_generate_predictions"]
    ]
    for trained, wanted in zip(model["comparisons"], spec["comparisons"], strict=True):
        assert [
            (lv["label_for_charts"], lv["sql_condition"]) for lv in trained["comparison_levels"]
        ] == [(lv["label_for_charts"], lv["sql_condition"]) for lv in wanted["comparison_levels"]]
        assert all(
            "u_probability" in lv for lv in trained["comparison_levels"]
            if not lv.get("is_null_level")
        )
    assert matching.model_version().startswith("splink-")


def test_a_model_with_other_comparisons_is_refused(tmp_path: Path) -> None:
    model = matching.load_model()
    model["comparisons"] = model["comparisons"][:2]
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    with pytest.raises(ValueError, match="retrain"):
        matching.load_model(path)
    with pytest.raises(FileNotFoundError, match="train"):
        matching.load_model(tmp_path / "missing.json")


def test_regularise_keeps_priors_and_no_impossible_level() -> None:
    model = json.loads(json.dumps(matching.load_model()))
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            if not level.get("is_null_level"):
                level["m_probability"] = 0.0
        comparison["comparison_levels"][1]["m_probability"] = 1.0
    out = regularise(model)
    priors = {c["output_column_name"]: c for c in matching.splink_settings()["comparisons"]}
    for comparison in out["comparisons"]:
        m = [lv["m_probability"] for lv in comparison["comparison_levels"]
             if not lv.get("is_null_level")]
        assert sum(m) == pytest.approx(1.0)
        assert min(m) >= M_FLOOR / 2
        if comparison["output_column_name"] == "phone":
            prior = [lv["m_probability"] for lv in priors["phone"]["comparison_levels"]
                     if not lv.get("is_null_level")]
            assert m == pytest.approx([p / sum(prior) for p in prior])


def test_the_matcher_spills_where_it_is_told(tmp_path: Path) -> None:
    """Splink's in-memory DuckDB spills into the given directory (the warehouse's temp
    dir under dbt), not into ``.tmp`` of the working directory (the repository)."""
    spill = str(tmp_path / "warehouse.duckdb.tmp" / "splink")
    con = matching.matcher_connection(threads=1, memory_limit="1GB", temp_directory=spill)
    try:
        setting = "select current_setting('temp_directory'), current_setting('threads')"
        assert con.execute(setting).fetchone() == (spill, 1)
    finally:
        con.close()
    bare = matching.matcher_connection(threads=None, memory_limit=None, temp_directory=None)
    try:
        assert bare.execute("select current_setting('temp_directory')").fetchone() == (".tmp",)
    finally:
        bare.close()


def _namesakes(n_people: int, n_pairs: int) -> list[dict]:
    """n_people distinct people (no two share name and birth date), of whom the
    first n_pairs have a second record with the same name and birth date."""
    rows = []
    for i in range(n_people):
        person = {
            "first": f"f{i % 97}", "last": f"l{i // 97}",
            "dob": date(1940 + i % 60, 1 + i % 12, 1 + i % 28),
            "city": f"c{i % 13}", "postal": f"{20000 + i}",
        }
        rows.append({"id": f"R{i:05d}", **person})
        if i < n_pairs:
            rows.append({"id": f"R{i:05d}b", **person, "postal": f"{90000 + i}"})
    return rows


def _prior(rows: list[dict]) -> float:
    import duckdb

    con = duckdb.connect()
    try:
        con.register("features", _features(rows))
        return matching.run_prior(con, "features", trained_prior=3e-5)
    finally:
        con.close()


def test_the_prior_is_estimated_from_the_run_records() -> None:
    # 1,000 people, 40 of them twice: 40 rule pairs among 1,040 records
    records, pairs = 1040, 40
    expected = pairs / matching.DETERMINISTIC_RECALL / (records * (records - 1) / 2)
    assert _prior(_namesakes(1000, 40)) == pytest.approx(expected)
    # the same duplicates among four times the people: a quarter or less of the prior
    assert _prior(_namesakes(4000, 40)) < expected / 4 * 1.01


def test_too_few_rule_pairs_keep_the_trained_prior() -> None:
    assert _prior(_namesakes(500, matching.MIN_PRIOR_PAIRS - 1)) == 3e-5
    assert _prior(_population()) == 3e-5


def test_a_bigger_population_lowers_a_coincidental_agreement() -> None:
    """The pair that agrees on name and birth date only (different city and postal
    code) is less likely one person among more records with the same duplicate count."""
    pair = [
        {"id": "Q1", "first": "ada", "last": "byron", "dob": date(1980, 5, 6),
         "city": "york", "postal": "YO1"},
        {"id": "Q2", "first": "ada", "last": "byron", "dob": date(1980, 5, 6),
         "city": "bath", "postal": "BA1"},
    ]
    scores = []
    for people in (1000, 4000):
        pairs = matching.predict_pairs(
            _features([*_namesakes(people, 40), *pair]), min_probability=0.0
        ).to_pylist()
        [q] = [p for p in pairs if (p["contact_id_l"], p["contact_id_r"]) == ("Q1", "Q2")]
        rows = [*_namesakes(people, 40), *pair]
        assert q["prior_match_probability"] == pytest.approx(_prior(rows))
        scores.append(q["match_probability"])
    assert scores[1] < scores[0]


def test_the_run_prior_equals_splinks_estimate() -> None:
    import duckdb
    from splink import DuckDBAPI, Linker

    from segment_warehouse.identity.train import _DETERMINISTIC_RULES

    con = duckdb.connect()
    try:
        contacts = DuckDBAPI(con).register(_features(_namesakes(1000, 40)))
        ours = matching.run_prior(con, contacts.physical_name, trained_prior=3e-5)
        linker = Linker(contacts, matching.splink_settings())
        linker.training.estimate_probability_two_random_records_match(
            list(_DETERMINISTIC_RULES), recall=matching.DETERMINISTIC_RECALL
        )
        splinks = linker.misc.save_model_to_json()["probability_two_random_records_match"]
    finally:
        con.close()
    assert ours == pytest.approx(splinks)


def test_regularise_floors_a_moved_address_and_fills_untrained_u() -> None:
    model = json.loads(json.dumps(matching.load_model()))
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            if comparison["output_column_name"] == "email_local":
                level.pop("u_probability", None)
            if comparison["output_column_name"] == "location" and not level.get("is_null_level"):
                # EM on duplicates that never move: the address always agrees
                level["m_probability"] = 0.0
        if comparison["output_column_name"] == "location":
            comparison["comparison_levels"][1]["m_probability"] = 1.0
    out = {
        c["output_column_name"]: c["comparison_levels"] for c in regularise(model)["comparisons"]
    }
    location = {lv["label_for_charts"]: lv["m_probability"] for lv in out["location"]
                if not lv.get("is_null_level")}
    assert location["else"] == pytest.approx(LEVEL_M_FLOORS[("location", "else")])
    assert sum(location.values()) == pytest.approx(1.0)
    assert min(location.values()) > 0
    for level in out["email_local"]:
        if not level.get("is_null_level"):
            assert level["u_probability"] == U_PRIORS[("email_local", level["label_for_charts"])]
