{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='anonymous_id',
        on_schema_change='fail'
    )
}}

{#-
    One row per session of int_events_sessionised (no customer yet: identities
    change as data arrives, int_sessions_stitched attaches the customer at
    build time). Incremental (delete+insert by anonymous_id): the anonymous ids
    int_events_sessionised re-sessionised in this run - events loaded after
    the newest load aggregated here, or stamped after the newest session end
    (future events that became eligible) - are re-aggregated over all their
    events; a daily delta no longer re-aggregates every event.
-#}

with

events as (

    select * from {{ ref('int_events_sessionised') }}

),

{%- set watermark_sql -%}
    select
        coalesce(max(last_loaded_at), '1900-01-01'::timestamptz) as max_loaded_at,
        coalesce(max(session_end_at), '1900-01-01'::timestamp) as max_event_ts
    from {{ this }}
{%- endset %}
{{ scope_to_touched_devices('events', watermark_sql) }}

final as (

    select
        session_id,
        anonymous_id,
        min(event_ts) as session_start_at,
        max(event_ts) as session_end_at,
        count(*) as events_count,
        count(*) filter (where event_type = 'page') as page_views_count,
        count(*) filter (where event_name = 'Product Viewed') as products_viewed_count,
        count(*) filter (where event_name = 'Product Added') as products_added_count,
        count(*) filter (where event_name = 'Order Completed') as orders_completed_count,
        count(distinct user_id) as distinct_user_ids,
        min(user_id) as user_id,
        arg_min(device_type, event_ts) filter (where device_type is not null) as device_type,
        arg_min(campaign_source, event_ts) filter (
            where campaign_source is not null
        ) as campaign_source,
        arg_min(campaign_medium, event_ts) filter (
            where campaign_medium is not null
        ) as campaign_medium,
        arg_min(page_url, event_ts) filter (where page_url is not null) as landing_page_url,
        max(_loaded_at) as last_loaded_at

    from scoped_events
    group by session_id, anonymous_id

)

select * from final
