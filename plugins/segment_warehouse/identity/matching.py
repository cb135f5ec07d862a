"""Probabilistic contact matching with Splink (DuckDB backend).

The matcher scores pairs of CRM contacts that share no identifier, from the
fields the CRM contract gives: names, birth date, city / postal code, and the
email local part and phone where present. Its input is the table
``intermediate.int_contacts_match_features`` (one row per contact, built by
dbt), so training and prediction see the same normalised features.

* :func:`splink_settings` - the model specification: blocking rules and
  comparisons (levels named by stable keys the guards in
  ``int_contact_matches`` refer to).
* :func:`predict_pairs` - score with the trained model saved in
  ``splink_model.json`` (m/u parameters, versioned with the repo; retrained
  only by ``python -m segment_warehouse.identity.train``). The one parameter
  that belongs to the data rather than the model - the prior that two random
  records match - is estimated on every run (:func:`run_prior`).

Splink runs on its own in-memory DuckDB connection: its many intermediate
tables never touch the warehouse file, and the result comes back as Arrow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

MODEL_PATH = Path(__file__).with_name("splink_model.json")

# Columns of int_contacts_match_features the model reads.
FEATURE_COLUMNS: tuple[str, ...] = (
    "contact_id",
    "first_name_key",
    "last_name_key",
    "first_name_forms",
    "full_name_key",
    "birth_date",
    "birth_date_text",
    "birth_date_swapped",
    "birth_year",
    "birth_month",
    "birth_day",
    "birth_day_month_set",
    "gender",
    "city_key",
    "postal_key",
    "email_local",
    "phone_e164",
)


def _level(
    key: str, sql: str, *, null: bool = False, tf: str | None = None, m: float | None = None
) -> dict[str, Any]:
    level: dict[str, Any] = {"sql_condition": sql, "label_for_charts": key}
    if null:
        level["is_null_level"] = True
    if m is not None:
        # prior m probability: training overwrites it where the level is seen;
        # a level the training data never shows (no day/month swaps in it)
        # keeps this instead of an untrained value
        level["m_probability"] = m
    if tf:
        level["tf_adjustment_column"] = tf
        level["tf_adjustment_weight"] = 1.0
    return level


def _else(m: float) -> dict[str, Any]:
    return _level("else", "ELSE", m=m)


def _jw(column: str, threshold: float) -> str:
    return f"jaro_winkler_similarity({column}_l, {column}_r) >= {threshold}"


# Level keys per comparison, in Splink order (null level first, else last).
# int_contact_matches decides on these keys, never on gamma numbers.
NAME_LEVELS = (
    "null", "exact", "swapped", "nickname", "fuzzy", "swapped_fuzzy", "first_missing",
    "last_missing", "part_missing_similar", "last_exact_first_similar",
    "first_exact_last_differs", "first_similar_last_differs", "last_exact_only", "else",
)


def _name_comparison() -> dict[str, Any]:
    first, last = "first_name_key", "last_name_key"
    return {
        "output_column_name": "name",
        "comparison_description": "first and last name (folded keys)",
        "comparison_levels": [
            _level(
                "null",
                f"({first}_l is null and {last}_l is null)"
                f" or ({first}_r is null and {last}_r is null)",
                null=True,
            ),
            # full_name_key is null unless both parts are known
            _level("exact", "full_name_key_l = full_name_key_r", tf="full_name_key", m=0.8),
            _level("swapped", f"{first}_l = {last}_r and {last}_l = {first}_r", m=0.01),
            _level(
                "nickname",
                f"list_has_any(first_name_forms_l, first_name_forms_r) and {last}_l = {last}_r",
                m=0.03,
            ),
            # typos and transposed letters in either or both parts
            _level("fuzzy", f"{_jw(first, 0.88)} and {_jw(last, 0.88)}", m=0.08),
            # first and last name swapped and one or both typed
            _level(
                "swapped_fuzzy",
                f"jaro_winkler_similarity({first}_l, {last}_r) >= 0.88"
                f" and jaro_winkler_similarity({last}_l, {first}_r) >= 0.88",
                m=0.01,
            ),
            _level(
                "first_missing",
                f"({first}_l is null or {first}_r is null) and {last}_l = {last}_r",
                m=0.01,
            ),
            _level(
                "last_missing",
                f"({last}_l is null or {last}_r is null)"
                f" and list_has_any(first_name_forms_l, first_name_forms_r)",
                m=0.01,
            ),
            # one part missing, the other typed
            _level(
                "part_missing_similar",
                f"(({first}_l is null or {first}_r is null) and {_jw(last, 0.88)})"
                f" or (({last}_l is null or {last}_r is null) and {_jw(first, 0.88)})",
                m=0.01,
            ),
            # a typed first name: one edit, very close (JW >= 0.9), or two
            # edits keeping the initial. Looser similarity (JW 0.7) pairs
            # household members (Patricia / Victoria, Michal / Richard).
            _level(
                "last_exact_first_similar",
                f"{last}_l = {last}_r and ({_jw(first, 0.9)}"
                f" or damerau_levenshtein({first}_l, {first}_r) <= 1"
                f" or (damerau_levenshtein({first}_l, {first}_r) <= 2"
                f" and left({first}_l, 1) = left({first}_r, 1)))",
                m=0.02,
            ),
            _level(
                "first_exact_last_differs",
                f"list_has_any(first_name_forms_l, first_name_forms_r) and {last}_l <> {last}_r",
                m=0.02,
            ),
            # a typed first name and another surname: as weak as the one above,
            # never a household conflict (that needs the same surname)
            _level(
                "first_similar_last_differs",
                f"{_jw(first, 0.88)} and {last}_l <> {last}_r",
                m=0.01,
            ),
            _level("last_exact_only", f"{last}_l = {last}_r", m=0.01),
            _else(0.02),
        ],
    }


BIRTH_DATE_LEVELS = ("null", "exact", "day_month_swapped", "one_typo", "else")


def _birth_date_comparison() -> dict[str, Any]:
    return {
        "output_column_name": "birth_date",
        "comparison_description": "birth date: exact, day/month swapped, one typed character",
        "comparison_levels": [
            _level("null", "birth_date_l is null or birth_date_r is null", null=True),
            _level("exact", "birth_date_l = birth_date_r", m=0.85),
            _level("day_month_swapped", "birth_date_text_l = birth_date_swapped_r", m=0.03),
            _level(
                "one_typo",
                "damerau_levenshtein(birth_date_text_l, birth_date_text_r) <= 1",
                m=0.07,
            ),
            _else(0.05),
        ],
    }


LOCATION_LEVELS = ("null", "postal_and_city", "postal", "city", "near", "else")


def _location_comparison() -> dict[str, Any]:
    return {
        "output_column_name": "location",
        "comparison_description": "postal code and city",
        "comparison_levels": [
            _level(
                "null",
                "(postal_key_l is null and city_key_l is null)"
                " or (postal_key_r is null and city_key_r is null)",
                null=True,
            ),
            # term-frequency adjusted: a postal code shared by many records
            # (a big-city code, a generator's few codes) says little
            _level(
                "postal_and_city", "postal_key_l = postal_key_r and city_key_l = city_key_r",
                tf="postal_key", m=0.6,
            ),
            _level("postal", "postal_key_l = postal_key_r", tf="postal_key", m=0.05),
            _level("city", "city_key_l = city_key_r", tf="city_key", m=0.1),
            _level(
                "near",
                "left(postal_key_l, 3) = left(postal_key_r, 3) or " + _jw("city_key", 0.9),
                m=0.05,
            ),
            _else(0.2),
        ],
    }


EMAIL_LEVELS = ("null", "exact", "similar", "else")


def _email_comparison() -> dict[str, Any]:
    return {
        "output_column_name": "email_local",
        "comparison_description": "local part of the mailbox (placeholders excluded)",
        "comparison_levels": [
            _level("null", "email_local_l is null or email_local_r is null", null=True),
            _level("exact", "email_local_l = email_local_r", tf="email_local", m=0.5),
            _level("similar", _jw("email_local", 0.88), m=0.2),
            _else(0.3),
        ],
    }


PHONE_LEVELS = ("null", "exact", "else")


def _phone_comparison() -> dict[str, Any]:
    return {
        "output_column_name": "phone",
        "comparison_description": "E.164 phone (placeholders excluded)",
        "comparison_levels": [
            _level("null", "phone_e164_l is null or phone_e164_r is null", null=True),
            _level("exact", "phone_e164_l = phone_e164_r", m=0.7),
            _else(0.3),
        ],
    }


COMPARISON_LEVELS: dict[str, tuple[str, ...]] = {
    "name": NAME_LEVELS,
    "birth_date": BIRTH_DATE_LEVELS,
    "location": LOCATION_LEVELS,
    "email_local": EMAIL_LEVELS,
    "phone": PHONE_LEVELS,
}

# Every pair that shares one of these is scored. Each rule combines fields so
# the block stays small even with few distinct names and places (a name alone
# would pair every John Smith with every other; the number of pairs grows with
# the square of a block). A duplicate with errors in several fields at once is
# reached through the rule its intact fields satisfy.
BLOCKING_RULES: tuple[str, ...] = (
    "l.last_name_key = r.last_name_key and l.birth_date = r.birth_date",
    "l.first_name_key = r.first_name_key and l.birth_date = r.birth_date",
    "l.birth_date = r.birth_date and l.postal_key = r.postal_key",
    "l.birth_date = r.birth_date and l.city_key = r.city_key",
    # full name and two of the three date parts: one typed digit anywhere
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key"
    " and l.birth_year = r.birth_year and l.birth_month = r.birth_month",
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key"
    " and l.birth_year = r.birth_year and l.birth_day = r.birth_day",
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key"
    " and l.birth_month = r.birth_month and l.birth_day = r.birth_day",
    # a nickname or a typo in one name part, with day and month swapped
    "l.last_name_key = r.last_name_key and l.birth_year = r.birth_year"
    " and l.birth_day_month_set = r.birth_day_month_set",
    "l.first_name_key = r.first_name_key and l.birth_year = r.birth_year"
    " and l.birth_day_month_set = r.birth_day_month_set",
    "l.first_name_key = r.last_name_key and l.last_name_key = r.first_name_key",
    # first and last name swapped, one of them typed
    "l.first_name_key = r.last_name_key and l.birth_date = r.birth_date",
    "l.last_name_key = r.first_name_key and l.birth_date = r.birth_date",
    # a record without a birth date at the same postal code: one name part
    # intact and the other's initial (a name + postal code block alone holds
    # every household member and namesake of a postal code; with few distinct
    # names, as in the sample generator, it grows with the square of them)
    "l.last_name_key = r.last_name_key and l.postal_key = r.postal_key"
    " and left(l.first_name_key, 1) = left(r.first_name_key, 1)"
    " and (l.birth_date is null or r.birth_date is null)",
    "l.first_name_key = r.first_name_key and l.postal_key = r.postal_key"
    " and left(l.last_name_key, 1) = left(r.last_name_key, 1)"
    " and (l.birth_date is null or r.birth_date is null)",
    "l.email_local = r.email_local",
    "l.phone_e164 = r.phone_e164",
)


# The prior that two random records match, estimated as Splink does
# (estimate_probability_two_random_records_match): pairs a near-certain rule
# finds, divided by its assumed recall, over all pairs. Training uses the same
# rule and recall on the training sets.
DETERMINISTIC_KEYS: tuple[str, ...] = ("first_name_key", "last_name_key", "birth_date")
DETERMINISTIC_RECALL = 0.6
# Below this many rule pairs the estimate is noise (a fixture, a first small
# delivery): the trained prior stands.
MIN_PRIOR_PAIRS = 20


def run_prior(con: duckdb.DuckDBPyConnection, table: str, trained_prior: float) -> float:
    """The prior for this run's records.

    Why per run: the prior falls with the square of the record count while the
    number of duplicates grows with it, so a prior fixed on a 15,000-record
    training set is hundreds of times too high at a million records, where
    coincidental name + birth-date agreements between strangers (namesakes
    born on the same day) then score as matches. Counted with a group-by (the
    rule is an equi-join on DETERMINISTIC_KEYS, so no pair is materialised);
    equal to Splink's estimator on the same rule and recall (tested), which
    cannot tell us the count for the small-sample fallback.
    """
    keys = ", ".join(DETERMINISTIC_KEYS)
    not_null = " and ".join(f"{k} is not null" for k in DETERMINISTIC_KEYS)
    [(records, rule_pairs)] = con.execute(
        f"""
        select
            (select count(*) from {table}),
            (select coalesce(sum(n * (n - 1) / 2), 0) from (
                select count(*) as n from {table} where {not_null} group by {keys}))
        """
    ).fetchall()
    all_pairs = records * (records - 1) / 2
    if rule_pairs < MIN_PRIOR_PAIRS or all_pairs <= 0:
        return trained_prior
    return min(rule_pairs / DETERMINISTIC_RECALL / all_pairs, 1.0)


def splink_settings() -> dict[str, Any]:
    """The (untrained) Splink model specification."""
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "contact_id",
        "probability_two_random_records_match": 1e-5,
        "blocking_rules_to_generate_predictions": [
            {"blocking_rule": rule} for rule in BLOCKING_RULES
        ],
        "comparisons": [
            _name_comparison(),
            _birth_date_comparison(),
            _location_comparison(),
            _email_comparison(),
            _phone_comparison(),
        ],
        "retain_matching_columns": False,
        "retain_intermediate_calculation_columns": False,
        "sql_dialect": "duckdb",
    }


def load_model(path: Path = MODEL_PATH) -> dict[str, Any]:
    """The trained model (Splink settings JSON with m/u parameters)."""
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"Splink model {path} not found; train one with "
            "`python -m segment_warehouse.identity.train`"
        ) from exc
    names = [c.get("output_column_name") for c in model.get("comparisons", [])]
    if names != list(COMPARISON_LEVELS):
        raise ValueError(
            f"Splink model {path} has comparisons {names}, expected {list(COMPARISON_LEVELS)}:"
            " retrain it with `python -m segment_warehouse.identity.train`"
        )
    return model


def model_version(path: Path = MODEL_PATH) -> str:
    """Content hash of the model file: changes exactly when the model does."""
    return "splink-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def gamma_labels(model: dict[str, Any]) -> dict[str, dict[int, str]]:
    """comparison -> gamma value -> level key (Splink: null = -1, else = 0)."""
    out: dict[str, dict[int, str]] = {}
    for comparison in model["comparisons"]:
        levels = comparison["comparison_levels"]
        non_null = [lv for lv in levels if not lv.get("is_null_level")]
        mapping = {-1: "null"}
        for i, level in enumerate(non_null):
            mapping[len(non_null) - 1 - i] = level["label_for_charts"]
        out[comparison["output_column_name"]] = mapping
    return out


def _empty_pairs() -> pa.Table:
    fields = [
        pa.field("contact_id_l", pa.string()),
        pa.field("contact_id_r", pa.string()),
        pa.field("match_weight", pa.float64()),
        pa.field("match_probability", pa.float64()),
        pa.field("prior_match_probability", pa.float64()),
    ] + [pa.field(f"{name}_level", pa.string()) for name in COMPARISON_LEVELS]
    return pa.schema(fields).empty_table()


def pairs_select_sql(predictions_table: str, prior: float, model: dict[str, Any]) -> str:
    """The pairs of a Splink prediction table: ordered contact ids, weight,
    probability, the prior they were scored with and one level label per
    comparison. Plain SQL that DuckDB and Spark both run (spark/identity.py)."""
    level_columns = ",\n".join(
        "case gamma_{c} {cases} end as {c}_level".format(
            c=name,
            cases=" ".join(f"when {g} then '{key}'" for g, key in sorted(mapping.items())),
        )
        for name, mapping in gamma_labels(model).items()
    )
    return f"""
        select
            least(contact_id_l, contact_id_r) as contact_id_l,
            greatest(contact_id_l, contact_id_r) as contact_id_r,
            cast(match_weight as double) as match_weight,
            cast(match_probability as double) as match_probability,
            cast({prior!r} as double) as prior_match_probability,
            {level_columns}
        from {predictions_table}
    """


def predict_pairs(
    features: pa.Table,
    *,
    min_probability: float,
    model_path: Path = MODEL_PATH,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
) -> pa.Table:
    """Score candidate pairs of ``features`` (int_contacts_match_features rows).

    Returns one row per pair with match_probability >= ``min_probability``:
    contact_id_l < contact_id_r, match_weight, match_probability, the run's
    prior (``prior_match_probability``, :func:`run_prior`) and, per
    comparison, the level key that decided it (``name_level`` ...).
    ``temp_directory``: where Splink spills beyond ``memory_limit``
    (:func:`matcher_connection`).
    """
    from splink import DuckDBAPI, Linker

    model = load_model(model_path)
    if features.num_rows < 2:
        return _empty_pairs()
    missing = [c for c in FEATURE_COLUMNS if c not in features.column_names]
    if missing:
        raise ValueError(f"matcher input lacks columns {missing}")
    features = features.select(list(FEATURE_COLUMNS))

    con = matcher_connection(
        threads=threads, memory_limit=memory_limit, temp_directory=temp_directory
    )
    try:
        db_api = DuckDBAPI(con)
        contacts = db_api.register(features, dataset_display_name="contacts")
        logging.getLogger("splink").setLevel(logging.WARNING)
        prior = run_prior(
            con, contacts.physical_name, float(model["probability_two_random_records_match"])
        )
        logging.getLogger(__name__).info(
            "matcher prior %.3g for %d records (trained %.3g)",
            prior, features.num_rows, model["probability_two_random_records_match"],
        )
        # the gamma (level) columns explain every pair in audit.identity_merges
        settings = {
            **model,
            "probability_two_random_records_match": prior,
            "retain_intermediate_calculation_columns": True,
            "retain_matching_columns": True,
        }
        linker = Linker(contacts, settings, log_level=logging.WARNING)
        predictions = linker.inference.predict(
            threshold_match_probability=min_probability, warning_mode="never"
        )
        return con.sql(pairs_select_sql(predictions.physical_name, prior, model)).to_arrow_table()
    finally:
        con.close()


def matcher_connection(
    *, threads: int | None, memory_limit: str | None, temp_directory: str | None
) -> duckdb.DuckDBPyConnection:
    """Splink's own in-memory DuckDB: its intermediate tables never touch the warehouse.

    Without ``temp_directory`` DuckDB would spill into ``.tmp`` of the current
    directory (the repository, when dbt runs there).
    """
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"set threads = {int(threads)}")
    if memory_limit:
        con.execute(f"set memory_limit = '{_safe_memory_limit(memory_limit)}'")
    if temp_directory:
        con.execute("set temp_directory = ?", [str(temp_directory)])
    con.execute("set preserve_insertion_order = false")
    return con


def _safe_memory_limit(value: str) -> str:
    text = value.strip()
    if not text or not all(ch.isalnum() or ch in ". " for ch in text):
        raise ValueError(f"invalid memory limit {value!r}")
    return text
