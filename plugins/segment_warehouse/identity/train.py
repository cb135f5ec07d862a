"""Train the probabilistic contact matcher and save it as JSON (explicit step).

    python -m segment_warehouse.identity.train --warehouse data/warehouse/warehouse.duckdb \\
        [--warehouse other.duckdb ...] [--out plugins/segment_warehouse/identity/splink_model.json]

Reads ``intermediate.int_contacts_match_features`` (built by ``dbt build``)
from each warehouse, estimates the Splink model without labels - u by random
sampling, m by expectation maximisation over blocks that leave the estimated
comparison free - and writes the model. Predictions never retrain: the
pipeline scores with the committed file until this command is run again and
the new file is committed (its content hash is the model version).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from segment_warehouse.identity.matching import (
    DETERMINISTIC_KEYS,
    DETERMINISTIC_RECALL,
    FEATURE_COLUMNS,
    MODEL_PATH,
    model_version,
    splink_settings,
)

FEATURES_TABLE = "intermediate.int_contacts_match_features"
# Comparisons whose m probabilities stay at the priors in matching.py (see regularise).
PRIOR_M_COMPARISONS: frozenset[str] = frozenset({"email_local", "phone"})
M_FLOOR = 1e-3
# Levels whose m may not fall below a floor of their own: a duplicate record
# exists because the person came back, often from a new address. The
# training sets' duplicates rarely move (our generator keeps the address,
# FEBRL seldom replaces both suburb and postcode), so EM learns m(address
# differs) ~ 0.015 and a moved duplicate loses the match; the floor is the
# m the earlier committed model carried. The same for a birth date that
# differs: its m only sets how much an equal date weighs (a differing one is
# vetoed), and without the floor an equal date among many namesakes (the
# sample generator at 200 k) outweighs a changed address.
LEVEL_M_FLOORS: dict[tuple[str, str], float] = {
    ("location", "else"): 0.08,
    ("birth_date", "else"): 0.10,
}
# u of the email levels when the training sets compare no local part (FEBRL
# has no email; the generator's local parts only spell the names, which the
# features drop): the u the committed model was trained with when they did.
U_PRIORS: dict[tuple[str, str], float] = {
    ("email_local", "exact"): 3.7e-05,
    ("email_local", "similar"): 2.92e-04,
    ("email_local", "else"): 0.999671,
}

# EM blocks: each fixes some fields so the others' m probabilities can be
# estimated among likely matches.
_EM_BLOCKS: tuple[str, ...] = (
    "l.birth_date = r.birth_date and l.postal_key = r.postal_key",
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key",
)
# Pairs this rule finds are near-certain matches; with the assumed recall
# they estimate the share of matching pairs among all pairs (the same rule
# re-estimates it for every run's records: matching.run_prior).
_DETERMINISTIC_RULES: tuple[str, ...] = (
    " and ".join(f"l.{key} = r.{key}" for key in DETERMINISTIC_KEYS),
)


def read_features(warehouses: list[Path]) -> pa.Table:
    """Feature rows of every warehouse, contact ids prefixed per source."""
    tables = []
    for i, path in enumerate(warehouses):
        if not path.is_file():
            raise FileNotFoundError(f"warehouse {path} does not exist")
        con = duckdb.connect(str(path), read_only=True)
        try:
            columns = ", ".join(c for c in FEATURE_COLUMNS if c != "contact_id")
            table = con.sql(
                f"select ? || contact_id as contact_id, {columns} from {FEATURES_TABLE}",
                params=[f"{i}:"],
            ).to_arrow_table()
        except duckdb.CatalogException as exc:
            raise ValueError(f"{path} has no {FEATURES_TABLE}: run dbt build first") from exc
        finally:
            con.close()
        tables.append(table)
    return pa.concat_tables(tables)


def train(
    features: pa.Table, *, out: Path, max_pairs: float, seed: int, recall: float
) -> Path:
    from splink import DuckDBAPI, Linker

    con = duckdb.connect(":memory:")
    try:
        db_api = DuckDBAPI(con)
        contacts = db_api.register(features, dataset_display_name="contacts")
        linker = Linker(contacts, splink_settings())
        linker.training.estimate_probability_two_random_records_match(
            list(_DETERMINISTIC_RULES), recall=recall
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
        for block in _EM_BLOCKS:
            linker.training.estimate_parameters_using_expectation_maximisation(block)
        model = regularise(linker.misc.save_model_to_json())
    finally:
        con.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out


def regularise(model: dict[str, Any]) -> dict[str, Any]:
    """Keep the prior m of PRIOR_M_COMPARISONS, floor every m at M_FLOOR, renormalise;
    raise the levels of LEVEL_M_FLOORS to their floor (the others shrink to keep
    the sum 1); fill u the training could not estimate from U_PRIORS.

    Why: unsupervised EM learns m only from what the training data shows.
    Public person benchmarks carry no email or phone, and a generator's
    duplicates may always keep theirs, so EM can conclude "a duplicate never
    has another email" (m = 0): one new address would then veto every true
    match. Those comparisons keep the documented prior, and no level is
    impossible for a match.
    """
    priors = {
        c["output_column_name"]: [lv.get("m_probability") for lv in c["comparison_levels"]]
        for c in splink_settings()["comparisons"]
    }
    for comparison in model["comparisons"]:
        name = comparison["output_column_name"]
        levels = comparison["comparison_levels"]
        if name in PRIOR_M_COMPARISONS:
            for level, prior in zip(levels, priors[name], strict=True):
                if prior is not None:
                    level["m_probability"] = prior
        non_null = [lv for lv in levels if not lv.get("is_null_level")]
        for level in non_null:
            level["m_probability"] = max(float(level.get("m_probability") or 0.0), M_FLOOR)
            key = (name, level["label_for_charts"])
            if level.get("u_probability") is None and key in U_PRIORS:
                level["u_probability"] = U_PRIORS[key]
        total = sum(level["m_probability"] for level in non_null)
        for level in non_null:
            level["m_probability"] = level["m_probability"] / total
        floored = [
            lv for lv in non_null
            if lv["m_probability"] < LEVEL_M_FLOORS.get((name, lv["label_for_charts"]), 0.0)
        ]
        if floored:
            for level in floored:
                level["m_probability"] = LEVEL_M_FLOORS[(name, level["label_for_charts"])]
            rest = [lv for lv in non_null if lv not in floored]
            scale = (1.0 - sum(lv["m_probability"] for lv in floored)) / sum(
                lv["m_probability"] for lv in rest
            )
            for level in rest:
                level["m_probability"] *= scale
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", type=Path, action="append", required=True,
                        help="warehouse.duckdb built by dbt (repeatable)")
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--max-pairs", type=float, default=3e6,
                        help="random pairs for the u estimate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--recall", type=float, default=DETERMINISTIC_RECALL,
                        help="assumed recall of the deterministic rules")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    features = read_features(args.warehouse)
    out = train(features, out=args.out, max_pairs=args.max_pairs, seed=args.seed,
                recall=args.recall)
    print(f"trained on {features.num_rows} contacts -> {out} ({model_version(out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
