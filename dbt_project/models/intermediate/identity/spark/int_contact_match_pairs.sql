{#-
    Spark target only (issue #19): the matcher's pairs as the Spark runner
    wrote them (segment_warehouse.spark.identity.predict_pairs: Splink's Spark
    backend, the same trained model and prior as the DuckDB target's Python
    model of this name, which dbt-spark cannot run). The runner scores
    int_contacts_match_features after it is built and before this model runs.
-#}
-- depends_on: {{ ref('int_contacts_match_features') }}

select * from {{ source('identity_runner', 'int_contact_match_pairs') }}
