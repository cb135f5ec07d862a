"""The optional Spark engine (issue #19): a local or cluster Spark session with
the warehouse's custom functions, and dbt run against it (``--target spark``).

Needs ``requirements-spark.txt`` (pyspark, dbt-spark) and a Java runtime;
outside it, only the Spark engine's code paths import it, and erasure imports
:mod:`segment_warehouse.spark.erasure` (DuckDB only, no pyspark).
"""
