"""The Spark session the dbt ``spark`` target runs on, with the warehouse UDFs.

dbt-spark's ``session`` method calls ``SparkSession.builder.getOrCreate()`` in
its own process, so the session built here (same process, before dbt starts)
is the one every model runs on: its catalog, its configuration and the Python
functions registered on it. The functions are the very ones the DuckDB target
gets from :mod:`segment_warehouse.dbt_plugin`, so both engines give the same
answers:

* ``normalise_phone(phone, country)``: :func:`dbt_plugin.normalise_phone_value`.
* ``pseudonymise(value)``: :func:`privacy.keyed_hash` (HMAC-SHA256, hex) under
  :meth:`Settings.pii_key`; the key lives in this process only (the Python
  worker gets it through the pickled closure), never in compiled SQL or logs.
* ``regexp_full_match(value, pattern)``: DuckDB's built-in, as a SQL function.

Settings (environment): ``SEGMENTS_SPARK_MASTER`` (default ``local[2]``),
``SEGMENTS_SPARK_DRIVER_MEMORY`` (default ``2g``), ``SEGMENTS_SPARK_SHUFFLE_PARTITIONS``
(default 4: the local zones are small; a cluster wants more). The catalog (a
Derby metastore) and the managed tables live under ``<warehouse_dir>/spark``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from segment_warehouse.config import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_dir(settings: Settings) -> Path:
    """Where the Spark catalog and its managed tables live for this warehouse."""
    return settings.warehouse_dir / "spark"


def build_session(
    settings: Settings | None = None, *, app_name: str = "segment_warehouse"
) -> SparkSession:
    """Start (or return) the process's Spark session, with Hive catalog and UDFs."""
    from pyspark.sql import SparkSession

    settings = settings or get_settings()
    root = spark_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    # Python workers must import segment_warehouse: the interpreter of this venv.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(os.environ.get("SEGMENTS_SPARK_MASTER", "local[2]"))
        .config("spark.driver.memory", os.environ.get("SEGMENTS_SPARK_DRIVER_MEMORY", "2g"))
        .config(
            "spark.sql.shuffle.partitions",
            os.environ.get("SEGMENTS_SPARK_SHUFFLE_PARTITIONS", "4"),
        )
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(root / "warehouse"))
        # The Derby metastore (catalog of schemas and tables) beside the tables,
        # not metastore_db/ and derby.log in whatever directory dbt was started from.
        .config(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        )
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={root}")
        .config("spark.ui.enabled", "false")
        # Splink's similarity functions (jaro_winkler, damerau_levenshtein, ...):
        # its Spark backend needs them, and the identity macros call
        # damerau_levenshtein by DuckDB's name (registered below).
        .config("spark.jars", similarity_jar())
        # Parquet timestamps as the standard int64 micros (instant or wall time
        # kept apart), not Spark's legacy INT96, which readers (DuckDB) take
        # for a naive timestamp.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        # What dbt-spark forces on every cursor; set here too so SQL run outside
        # dbt (tests, exports) behaves the same.
        .config("spark.sql.ansi.enabled", "false")
        # String literals read raw, as DuckDB reads them: one regex literal
        # ('\+?[0-9]+') means the same on both targets (by default Spark
        # drops the backslash of an unknown escape).
        .config("spark.sql.parser.escapedStringLiterals", "true")
        .enableHiveSupport()
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SEGMENTS_SPARK_LOG_LEVEL", "WARN"))
    register_udfs(spark, settings.pii_key())
    return spark


def similarity_jar() -> str:
    """The similarity-function jar that ships in Splink's wheel (for this Spark version)."""
    from splink.backends.spark import similarity_jar_location

    return similarity_jar_location()


def register_udfs(spark: SparkSession, pii_key: str) -> None:
    """Register the warehouse functions on ``spark`` (session-scoped).

    ``normalise_phone``, ``pseudonymise``, ``strip_accents`` (Python, DuckDB's
    rule: :mod:`segment_warehouse.spark.functions`), ``damerau_levenshtein``
    (the Splink jar's, as Splink's Spark backend registers it),
    ``regexp_full_match`` and ``strftime`` (SQL).
    """
    from pyspark.sql.types import DoubleType, StringType

    from segment_warehouse.dbt_plugin import normalise_phone_value
    from segment_warehouse.privacy import keyed_hash
    from segment_warehouse.spark.functions import strip_accents

    def _normalise_phone(phone: str | None, country: str | None) -> str | None:
        return normalise_phone_value(phone, country)

    def _pseudonymise(value: str | None) -> str | None:
        return None if value is None else keyed_hash(value, pii_key)

    spark.udf.register("normalise_phone", _normalise_phone, StringType())
    spark.udf.register("pseudonymise", _pseudonymise, StringType())
    spark.udf.register("strip_accents", strip_accents, StringType())
    # DuckDB's returns an integer; the jar's a double: the identity SQL only
    # compares it with small integers
    spark.udf.registerJavaFunction(
        "damerau_levenshtein", "uk.gov.moj.dash.linkage.LevDamerauDistance", DoubleType()
    )
    # DuckDB's regexp_full_match as a SQL function (no Python per row), for the
    # project SQL outside the portable macros (macros/identity.sql, the
    # valid_e164 test). `\z`: Java's `$` also matches before a final line break.
    spark.sql(
        "create or replace temporary function regexp_full_match(value string, pattern string) "
        "returns boolean return value rlike concat('^(?:', pattern, ')\\z')"
    )
    # DuckDB's strftime for dates, for the formats the project uses (%Y %m %d):
    # Spark's date_format with the Java pattern letters
    spark.sql(
        "create or replace temporary function strftime(value date, format string) "
        "returns string return date_format(value, "
        "replace(replace(replace(format, '%Y', 'yyyy'), '%m', 'MM'), '%d', 'dd'))"
    )
