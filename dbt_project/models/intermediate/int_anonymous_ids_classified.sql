{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='anonymous_id',
        on_schema_change='fail'
    )
}}

-- One row per anonymous id with the guards identity resolution needs:
-- bot (any crawler user agent), shared device (logged in as more than one
-- contact, or identified with more than one non-placeholder email).
-- Incremental: only anonymous ids with newly loaded events are re-aggregated
-- (over all their events) and replaced.

with

events as (

    select * from {{ ref('int_events_deduplicated') }}
    where anonymous_id is not null

),

{{ scope_to_keys_loaded_since_last_run('events', 'anonymous_id', 'last_loaded_at') }}

classified as (

    select
        anonymous_id,
        bool_or(is_bot) as is_bot,
        count(distinct user_id) as distinct_user_ids,
        min(user_id) as user_id,
        count(distinct trait_email) filter (
            where event_type = 'identify' and not is_placeholder_email
        ) as distinct_trait_emails,
        min(trait_email) filter (
            where event_type = 'identify' and not is_placeholder_email
        ) as trait_email,
        count(*) as events_count,
        min(event_ts) as first_event_at,
        max(event_ts) as last_event_at,
        max(_loaded_at) as last_loaded_at

    from scoped_events
    group by anonymous_id

),

final as (

    select
        *,
        distinct_user_ids > 1 or distinct_trait_emails > 1 as is_shared_device
    from classified

)

select * from final
