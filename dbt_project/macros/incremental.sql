{#-
    CTEs ending in `scoped_events`: on an incremental run, every event of the
    anonymous ids touched since the last run (loaded after the newest
    `max_loaded_at`, or stamped after the newest `max_event_ts`, i.e. future
    events that became eligible); on a full build, all events. Used by
    int_sessions_aggregated, which delete+insert by anonymous_id.

    events_cte:    name of the CTE holding the candidate events
    watermark_sql: a select over {{ this }} returning max_loaded_at, max_event_ts
-#}
{% macro scope_to_touched_devices(events_cte, watermark_sql) -%}
{% if is_incremental() %}
watermark as (

    {{ watermark_sql }}

),

touched_anonymous_ids as (

    select distinct anonymous_id
    from {{ events_cte }}
    where _loaded_at > (select max_loaded_at from watermark)
        or event_ts > (select max_event_ts from watermark)

),

scoped_events as (

    select {{ events_cte }}.*
    from {{ events_cte }}
    semi join touched_anonymous_ids
        on {{ events_cte }}.anonymous_id = touched_anonymous_ids.anonymous_id

),
{% else %}
scoped_events as (

    select * from {{ events_cte }}

),
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
    where _loaded_at > (select coalesce(max(_loaded_at), '1900-01-01'::timestamptz) from {{ this }})
{% endif %}
{%- endmacro %}

{#-
    CTEs ending in `scoped_<rows_cte>`: on an incremental run, every row of the
    keys (`key` column) that have a row loaded after the newest
    `this_loaded_at_column` in {{ this }}, so each touched key is recomputed
    over all its rows and replaced (delete+insert on `key`); on a full build,
    all rows. Used by int_orders_deduplicated and int_anonymous_ids_classified.

    rows_cte:              name of the CTE holding the candidate rows (with _loaded_at)
    key:                   the unique_key column of the model
    this_loaded_at_column: the column of {{ this }} that holds the load watermark
-#}
{% macro scope_to_keys_loaded_since_last_run(rows_cte, key, this_loaded_at_column='_loaded_at') -%}
{% if is_incremental() %}
touched_{{ rows_cte }}_keys as (

    select distinct {{ key }}
    from {{ rows_cte }}
    -- coalesce: an existing but empty table (first run before any file of
    -- the source) has no max, and `> null` would select no key on every later run
    where _loaded_at > (
        select coalesce(max({{ this_loaded_at_column }}), '1900-01-01'::timestamptz)
        from {{ this }}
    )

),

scoped_{{ rows_cte }} as (

    select {{ rows_cte }}.*
    from {{ rows_cte }}
    semi join touched_{{ rows_cte }}_keys
        on {{ rows_cte }}.{{ key }} = touched_{{ rows_cte }}_keys.{{ key }}

),
{% else %}
scoped_{{ rows_cte }} as (

    select * from {{ rows_cte }}

),
{% endif %}
{%- endmacro %}
