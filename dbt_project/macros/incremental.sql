{#-
    The materialisation of the models that replace every row of a touched key
    (int_orders_deduplicated, int_sessions_aggregated): config(**keyed_incremental(key)).
    DuckDB: incremental, delete+insert on `unique_key`. Spark: a table, rebuilt
    on every run. dbt-spark's session method has no delete+insert, and merge
    needs Delta or Iceberg, whose jars are not available offline here;
    insert_overwrite would need a partition column (e.g. a hash bucket of the
    key) in the model, which the DuckDB schema does not have. A full rebuild is
    correct by construction; an incremental Spark strategy is future work.
-#}
{% macro keyed_incremental(unique_key) -%}
    {{ return(adapter.dispatch('keyed_incremental')(unique_key)) }}
{%- endmacro %}

{% macro default__keyed_incremental(unique_key) -%}
    {{ return({
        'materialized': 'incremental',
        'incremental_strategy': 'delete+insert',
        'unique_key': unique_key,
        'on_schema_change': 'fail',
    }) }}
{%- endmacro %}

{% macro spark__keyed_incremental(unique_key) -%}
    {{ return({'materialized': 'table'}) }}
{%- endmacro %}

{#- The instant before every load: the watermark of an empty table. Spark has
    no timestamptz type; its `timestamp` is an instant (session time zone UTC). -#}
{% macro watermark_floor() -%}
    {{ return(adapter.dispatch('watermark_floor')()) }}
{%- endmacro %}

{% macro default__watermark_floor() -%}
    '1900-01-01'::timestamptz
{%- endmacro %}

{% macro spark__watermark_floor() -%}
    timestamp'1900-01-01 00:00:00'
{%- endmacro %}

{#-
    Predicates of the incremental models. Each goes where a `where` condition
    would, inside a CTE the model writes out itself, and is `true` on a full
    build.
-#}

{#-
    The devices (anonymous ids) touched since the last run: with an event loaded
    after the newest `max_loaded_at`, or stamped after the newest
    `max_event_ts` (future events that became eligible). Used by
    int_sessions_aggregated, which delete+inserts by anonymous_id.

    events_cte:    name of the CTE holding the candidate events
    watermark_sql: a select over {{ this }} returning max_loaded_at, max_event_ts
-#}
{% macro device_touched_since_last_run(events_cte, watermark_sql) -%}
{% if is_incremental() %}
    anonymous_id in (
        select anonymous_id
        from {{ events_cte }}
        where _loaded_at > (select max_loaded_at from ({{ watermark_sql }}) as watermark)
            or event_ts > (select max_event_ts from ({{ watermark_sql }}) as watermark)
    )
{% else %}
    true
{% endif %}
{%- endmacro %}

{#-
    The filter of the append-only incremental models: on an incremental run,
    only rows loaded after the newest `_loaded_at` already in {{ this }}
    (raw tables are append-only, so nothing older can be new); nothing on a
    full build. Goes where a `where` clause would.
-#}
{% macro where_loaded_since_last_run() -%}
{% if is_incremental() %}
    where _loaded_at > (select coalesce(max(_loaded_at), {{ watermark_floor() }}) from {{ this }})
{% endif %}
{%- endmacro %}

{#-
    The keys (`key` column) with a row loaded after the newest
    `this_loaded_at_column` in {{ this }}: each touched key is recomputed over
    all its rows and replaced (delete+insert on `key`). Used by
    int_orders_deduplicated and int_anonymous_ids_classified.

    rows_cte:              name of the CTE holding the candidate rows (with _loaded_at)
    key:                   the unique_key column of the model
    this_loaded_at_column: the column of {{ this }} that holds the load watermark
-#}
{% macro key_loaded_since_last_run(rows_cte, key, this_loaded_at_column='_loaded_at') -%}
{% if is_incremental() %}
    {{ key }} in (
        select {{ key }}
        from {{ rows_cte }}
        -- coalesce: an existing but empty table (first run before any file of
        -- the source) has no max, and `> null` would select no key on every later run
        where _loaded_at > (
            select coalesce(max({{ this_loaded_at_column }}), {{ watermark_floor() }})
            from {{ this }}
        )
    )
{% else %}
    true
{% endif %}
{%- endmacro %}
