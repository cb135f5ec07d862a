"""Scoring every customer in Spark with models fitted on the driver (issue #19, plan item 5).

Reclustering and predictions fit scikit-learn models on the driver, on bounded
samples; what grows with the customer base is scoring every customer. With
``SEGMENTS_ENGINE=spark`` that step runs here: the fitted objects are broadcast
to the Python workers and each Arrow batch is scored by the same function the
DuckDB engine calls on its one pandas frame (``clustering.scoring.score_batch``,
``predictions.scoring.score_batch``), so both engines give the same answers.
MLlib's KMeans / GBT would be other models (other initialisation, binning,
calibration) and could not give the DuckDB engine's assignments and
probabilities.

The scores are written as Parquet by the executors (on a cluster: shared
storage, not through the driver's JVM) and read back into pandas for the
driver's remaining steps, which write ``warehouse.duckdb`` as before. The
Parquet files name customers: they are deleted once read.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segment_warehouse.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from segment_warehouse.clustering.scoring import ClusterScorer

log = logging.getLogger(__name__)

BatchFn = Callable[[Any, pd.DataFrame], pd.DataFrame]


def scoring_dir(settings: Settings) -> Path:
    """Scratch space of the scoring step (inputs and outputs of one call each)."""
    from segment_warehouse.spark.session import spark_dir

    return spark_dir(settings) / "scoring"


def built_relation(spark: SparkSession, settings: Settings, schema: str, name: str) -> DataFrame:
    """A relation of the last Spark build: its Parquet under ``built_parquet``
    (``built_exports.json``), else the table in the session's catalog."""
    from segment_warehouse.spark.runner import built_exports, built_exports_file

    listing = built_exports_file(settings)
    if listing.exists():
        for export in built_exports(settings):
            if export["schema"] == schema and export["name"] == name:
                return spark.read.parquet(Path(export["folder"]).as_posix())
    if spark.catalog.tableExists(f"{schema}.{name}"):
        return spark.table(f"{schema}.{name}")
    raise FileNotFoundError(
        f"{schema}.{name} is neither in {listing} nor in the Spark catalog: "
        "build the dbt project on Spark first (SEGMENTS_ENGINE=spark)"
    )


def _batches(fn: BatchFn, payload: Any, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    from threadpoolctl import threadpool_limits

    # One task per core: BLAS / OpenMP threads inside a task would oversubscribe
    # the executor (and cannot change a row's result: scoring is row-wise).
    with threadpool_limits(limits=1):
        for batch in batches:
            yield fn(payload, batch)


def map_batches(
    spark: SparkSession,
    df: DataFrame,
    fn: BatchFn,
    payload: Any,
    schema: str,
    *,
    settings: Settings,
) -> pd.DataFrame:
    """``fn(payload, batch)`` over every Arrow batch of ``df`` in Spark's Python
    workers (``payload`` broadcast once), the results as one pandas frame."""
    parallelism = spark.sparkContext.defaultParallelism
    if df.rdd.getNumPartitions() < parallelism:
        df = df.repartition(parallelism)  # a single Parquet file is one partition
    shared = spark.sparkContext.broadcast(payload)
    out = scoring_dir(settings) / f"out-{uuid.uuid4().hex}"
    t0 = time.perf_counter()
    try:
        df.mapInPandas(lambda it: _batches(fn, shared.value, it), schema).write.parquet(
            out.as_posix()
        )
        scored = pq.read_table(out).to_pandas()
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shared.unpersist()
    log.info("scored %d rows in Spark in %.1f s", len(scored), time.perf_counter() - t0)
    return scored


def score_frame(
    frame: pd.DataFrame, fn: BatchFn, payload: Any, schema: str, *, settings: Settings
) -> pd.DataFrame:
    """:func:`map_batches` over a driver-side frame, handed to Spark as Parquet."""
    from segment_warehouse.spark.session import build_session

    spark = build_session(settings)
    folder = scoring_dir(settings) / f"in-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "part-0.parquet")
        return map_batches(
            spark, spark.read.parquet(folder.as_posix()), fn, payload, schema, settings=settings
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def score_customer_features(scorer: ClusterScorer, settings: Settings) -> pd.DataFrame:
    """Cluster labels of the Spark build's ``marts.customer_features``
    (``clustering.scoring.SCORED_COLUMNS``), scored in Spark."""
    from pyspark.sql import functions as F

    from segment_warehouse.clustering.features import FEATURE_NAMES
    from segment_warehouse.clustering.scoring import SPARK_SCHEMA, score_unrounded_batch
    from segment_warehouse.spark.session import build_session

    spark = build_session(settings)
    features = built_relation(spark, settings, "marts", "customer_features")
    # The casts load_customer_features makes in DuckDB; its rounding is DuckDB's
    # (score_unrounded_batch), which Spark's round is not.
    rows = features.select(
        F.col("customer_id").cast("string").alias("customer_id"),
        F.col("marketing_consent").cast("boolean").alias("marketing_consent"),
        *[F.col(c).cast("double").alias(c) for c in FEATURE_NAMES],
    )
    return map_batches(spark, rows, score_unrounded_batch, scorer, SPARK_SCHEMA, settings=settings)
