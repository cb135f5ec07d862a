"""Candidate duplicate contacts scored by the probabilistic matcher (Splink).

Scores the pairs that share a blocking key (segment_warehouse.identity.
matching.BLOCKING_RULES) of int_contacts_match_features with the trained
model committed as plugins/segment_warehouse/identity/splink_model.json - the
model is never retrained here (python -m segment_warehouse.identity.train
does that, explicitly). Keeps pairs with match_probability >= the
candidate_probability config (so reviewers also see near misses); which pairs
merge is decided in int_contact_matches.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from segment_warehouse.identity.matching import model_version, predict_pairs


def model(dbt: Any, session: Any) -> Any:
    dbt.config(materialized="table")
    # dbt passes a config key to a Python model only when its parser sees the
    # dbt.config.get call directly (not inside `x or default`), so these calls
    # stand alone with their defaults
    candidate_probability = float(dbt.config.get("candidate_probability", 0.5))
    memory_limit = dbt.config.get("matcher_memory_limit", "2GB")

    # var identity_probabilistic_matching: false turns the matcher off (the
    # deterministic graph alone, e.g. to compare or to bound a huge backfill)
    enabled = str(dbt.config.get("probabilistic_matching", True)).strip().lower()
    features = dbt.ref("int_contacts_match_features").to_arrow_table()
    if enabled in {"false", "0", "no"}:
        features = features.slice(0, 0)
    threads = session.execute("select current_setting('threads')").fetchone()[0]
    # spill beside the warehouse's own temp files, never into the working directory
    warehouse_temp = session.execute("select current_setting('temp_directory')").fetchone()[0]
    pairs = predict_pairs(
        features, min_probability=candidate_probability, threads=int(threads),
        memory_limit=memory_limit or "2GB",
        temp_directory=f"{warehouse_temp}/splink" if warehouse_temp else None,
    )
    version = model_version()
    return pairs.append_column(
        "model_version", pa.array([version] * pairs.num_rows, type=pa.string())
    )
