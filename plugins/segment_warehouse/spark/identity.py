"""The two identity steps dbt-spark cannot run (no Python models), on the Spark session.

On the DuckDB target they are dbt Python models (``int_contact_match_pairs.py``,
``int_identity_components.py``). On the Spark target the runner
(:mod:`segment_warehouse.spark.runner`) calls these functions between dbt
phases and writes their tables under the ``identity_runner`` schema, which the
Spark-only SQL models of the same names (``models/intermediate/identity/
spark/``) select from.

* :func:`predict_pairs` - the probabilistic matcher through Splink's Spark
  backend, with the trained model ``identity/splink_model.json``, the per-run
  prior and the level keys of :mod:`segment_warehouse.identity.matching`
  (imported, not copied).
* :func:`connected_components` - components of ``int_identity_edges`` by
  iterative min-label propagation with pointer jumping on DataFrames, in the
  same two passes as the DuckDB model (backbone, then the device edges whose
  logins and emails reach one person), with an iteration cap and a depth
  report.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segment_warehouse.identity.matching import (
    COMPARISON_LEVELS,
    FEATURE_COLUMNS,
    MODEL_PATH,
    load_model,
    model_version,
    pairs_select_sql,
    run_prior,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

RUNNER_SCHEMA = "identity_runner"
PAIRS_TABLE = f"{RUNNER_SCHEMA}.int_contact_match_pairs"
COMPONENTS_TABLE = f"{RUNNER_SCHEMA}.int_identity_components"
DEVICE_EDGE_TYPES = ("device_login", "device_identify")
# Propagation rounds per pass before giving up: pointer jumping needs about
# log2 of the longest path, so a graph that needs this many is not customer data.
DEFAULT_MAX_ITERATIONS = 40

_log = logging.getLogger(__name__)


class _SparkCursor:
    """The two methods of a DuckDB connection ``matching.run_prior`` calls."""

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str) -> _SparkCursor:
        self._rows = [tuple(row) for row in self._spark.sql(sql).collect()]
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


def register_similarity_functions(spark: SparkSession) -> None:
    """``jaro_winkler_similarity`` under DuckDB's name, computed by DuckDB (Arrow batches).

    Splink's jar has a jaro_winkler too, but it scores some pairs lower than
    DuckDB (see :func:`functions.duckdb_jaro_winkler`); the trained model's
    levels were set on DuckDB's values. ``damerau_levenshtein`` (the jar's,
    equal to DuckDB's) is registered by :func:`session.register_udfs`.
    """
    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import DoubleType

    from segment_warehouse.spark.functions import duckdb_jaro_winkler

    def jaro_winkler_similarity(left: Any, right: Any) -> Any:
        return duckdb_jaro_winkler(left, right)

    # pandas_udf reads the batch kind from the annotations, which
    # `from __future__ import annotations` leaves as text
    jaro_winkler_similarity.__annotations__ = {"left": pd.Series, "right": pd.Series,
                                               "return": pd.Series}  # fmt: skip
    spark.udf.register(
        "jaro_winkler_similarity",
        pandas_udf(jaro_winkler_similarity, DoubleType()),  # type: ignore[call-overload]
    )


def spark_model(model: dict[str, Any], prior: float) -> dict[str, Any]:
    """The trained model as Splink settings for its Spark backend.

    The level conditions are DuckDB SQL; the only DuckDB-only function in them
    is list_has_any (Spark: arrays_overlap). jaro_winkler_similarity and
    damerau_levenshtein are session functions of the same names.
    """
    comparisons = []
    for comparison in model["comparisons"]:
        levels = [
            {
                **level,
                "sql_condition": level["sql_condition"].replace("list_has_any(", "arrays_overlap("),
            }
            for level in comparison["comparison_levels"]
        ]
        comparisons.append({**comparison, "comparison_levels": levels})
    return {
        **model,
        "comparisons": comparisons,
        "sql_dialect": "spark",
        "probability_two_random_records_match": prior,
        # the gamma (level) columns explain every pair in audit.identity_merges
        "retain_intermediate_calculation_columns": True,
        "retain_matching_columns": True,
    }


def _empty_pairs(spark: SparkSession) -> DataFrame:
    levels = ", ".join(f"{name}_level string" for name in COMPARISON_LEVELS)
    return spark.createDataFrame(
        [],
        "contact_id_l string, contact_id_r string, match_weight double, "
        f"match_probability double, prior_match_probability double, {levels}",
    )


def predict_pairs(
    spark: SparkSession,
    features: DataFrame,
    *,
    min_probability: float,
    model_path: Path = MODEL_PATH,
) -> tuple[DataFrame, dict[str, Any]]:
    """Score the candidate pairs of ``features`` (int_contacts_match_features rows).

    The same columns as the DuckDB model's ``matching.predict_pairs`` plus
    ``model_version``; and a small report (records, prior, pairs).
    """
    from splink import Linker, SparkAPI

    model = load_model(model_path)
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise ValueError(f"matcher input lacks columns {missing}")
    features = features.select(*FEATURE_COLUMNS)
    records = features.count()
    version = model_version(model_path)
    report: dict[str, Any] = {"records": records, "model_version": version}
    if records < 2:
        pairs = _empty_pairs(spark)
    else:
        register_similarity_functions(spark)
        db_api = SparkAPI(spark_session=spark, break_lineage_method="persist")
        contacts = db_api.register(features, dataset_display_name="contacts")
        logging.getLogger("splink").setLevel(logging.WARNING)
        prior = run_prior(
            _SparkCursor(spark),  # type: ignore[arg-type]
            contacts.physical_name,
            float(model["probability_two_random_records_match"]),
        )
        report["prior"] = prior
        linker = Linker(contacts, spark_model(model, prior), log_level=logging.WARNING)
        predictions = linker.inference.predict(
            threshold_match_probability=min_probability, warning_mode="never"
        )
        pairs = spark.sql(pairs_select_sql(predictions.physical_name, prior, model))
    from pyspark.sql.functions import lit

    return pairs.withColumn("model_version", lit(version)), report


def _propagate(
    spark: SparkSession, nodes: DataFrame, edges: DataFrame, max_iterations: int, name: str
) -> tuple[DataFrame, dict[str, Any]]:
    """(node, label): the smallest node of its component, by min-label propagation.

    Each round a node takes the smallest label among itself and its
    neighbours, then the label of its label (pointer jumping), so a chain of
    length d settles in about log2(d) rounds rather than d. Labels only fall
    and are always a node of the component; the fixed point gives every node
    of a component its smallest node.
    """
    from pyspark.sql import functions as F

    both = (
        edges.select(F.col("src").alias("a"), F.col("dst").alias("b"))
        .union(edges.select(F.col("dst").alias("a"), F.col("src").alias("b")))
        .where("a <> b")
        .distinct()
        .persist()
    )
    labels = nodes.select("node", F.col("node").alias("label")).localCheckpoint()
    changes: list[int] = []
    for _ in range(max_iterations):
        neighbour_min = (
            both.join(labels, both.b == labels.node)
            .groupBy(both.a.alias("node"))
            .agg(F.min("label").alias("neighbour_label"))
        )
        stepped = labels.join(neighbour_min, "node", "left").select(
            "node", F.least("label", F.coalesce("neighbour_label", "label")).alias("label")
        )
        target = stepped.select(F.col("node").alias("t_node"), F.col("label").alias("t_label"))
        jumped = (
            stepped.join(target, stepped.label == target.t_node, "left")
            .select("node", F.least("label", F.coalesce("t_label", "label")).alias("label"))
            .localCheckpoint()
        )
        changed = (
            jumped.alias("n").join(labels.alias("o"), "node").where("n.label <> o.label").count()
        )
        labels = jumped
        changes.append(changed)
        if changed == 0:
            break
    else:
        raise RuntimeError(
            f"identity components ({name}) not settled after {max_iterations} rounds "
            f"(label changes per round: {changes}); raise SEGMENTS_SPARK_COMPONENT_MAX_ITERATIONS "
            "only after checking the graph for a degenerate chain"
        )
    both.unpersist()
    _log.info("components %s: %d rounds, label changes %s", name, len(changes), changes)
    return labels, {"rounds": len(changes), "label_changes": changes}


def connected_components(
    spark: SparkSession, edges: DataFrame, *, max_iterations: int | None = None
) -> tuple[DataFrame, dict[str, Any]]:
    """int_identity_components on Spark: (node, component_id, is_shared_device) and a depth report.

    The two passes of the DuckDB model: components of the backbone edges; an
    anonymous id keeps its device edges only when they reach at most one
    person (a component holding a contact), or, reaching no person, at most
    one component; then components of backbone plus kept device edges.
    component_id is a label for this build only (as on DuckDB).
    """
    from pyspark.sql import functions as F

    cap = max_iterations or int(
        os.environ.get("SEGMENTS_SPARK_COMPONENT_MAX_ITERATIONS", DEFAULT_MAX_ITERATIONS)
    )
    started = time.time()
    edges = edges.select(
        F.col("src_node").alias("src"), F.col("dst_node").alias("dst"), "edge_type"
    ).persist()
    nodes = (
        edges.select(F.col("src").alias("node"))
        .union(edges.select(F.col("dst").alias("node")))
        .distinct()
        .persist()
    )
    is_device = F.col("edge_type").isin(*DEVICE_EDGE_TYPES)
    backbone = edges.where(~is_device).select("src", "dst")
    first, first_report = _propagate(spark, nodes, backbone, cap, "backbone")

    person = first.where(F.col("node").startswith("c:")).select("label").distinct()
    person = person.withColumn("is_person", F.lit(True))
    reached = (
        edges.where(is_device)
        .join(first, edges.dst == first.node)
        .select(F.col("src").alias("anonymous_node"), "label")
        .join(person, "label", "left")
    )
    verdicts = (
        reached.groupBy("anonymous_node")
        .agg(
            F.countDistinct(F.when(F.col("is_person"), F.col("label"))).alias("persons_reached"),
            F.countDistinct("label").alias("components_reached"),
        )
        .persist()
    )
    kept = (
        edges.where(is_device)
        .join(verdicts, edges.src == verdicts.anonymous_node)
        .where("persons_reached <= 1 and (persons_reached = 1 or components_reached <= 1)")
        .select("src", "dst")
    )
    final, final_report = _propagate(spark, nodes, backbone.union(kept), cap, "with devices")

    # labels (node keys) -> bigint component ids
    ids = (
        final.select("label")
        .distinct()
        .rdd.map(lambda row: row[0])
        .sortBy(lambda x: x)
        .zipWithIndex()
        .toDF(["label", "component_id"])
    )
    components = (
        final.join(ids, "label")
        .join(verdicts, final.node == verdicts.anonymous_node, "left")
        .select(
            "node",
            F.col("component_id").cast("bigint").alias("component_id"),
            F.coalesce(
                (F.col("persons_reached") > 1)
                | ((F.col("persons_reached") == 0) & (F.col("components_reached") > 1)),
                F.lit(False),
            ).alias("is_shared_device"),
        )
    )
    sizes = final.groupBy("label").count()
    stats = sizes.agg(F.count("*").alias("components"), F.max("count").alias("largest")).first()
    report = {
        "nodes": nodes.count(),
        "edges": edges.count(),
        "backbone": first_report,
        "with_devices": final_report,
        "components": int(stats["components"]) if stats else 0,
        "largest_component_nodes": int(stats["largest"] or 0) if stats else 0,
        "max_iterations": cap,
        "seconds": round(time.time() - started, 1),
    }
    return components, report
