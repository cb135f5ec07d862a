{#-
    Spark target only (issue #19): connected components of int_identity_edges
    as the Spark runner computed them (segment_warehouse.spark.identity.
    connected_components: iterative label propagation on the same session,
    the same two passes as the DuckDB target's Python model of this name,
    which dbt-spark cannot run). The runner computes them after
    int_identity_edges is built and before this model runs.
-#}
-- depends_on: {{ ref('int_identity_edges') }}

select * from {{ source('identity_runner', 'int_identity_components') }}
