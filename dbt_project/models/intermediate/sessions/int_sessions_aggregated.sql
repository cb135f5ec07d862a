{{ config(**keyed_incremental('anonymous_id')) }}

{#-
    Sessions, one row per session, cut from the events and aggregated in one
    model: a new session starts after more than var('session_gap_minutes') (30)
    minutes of inactivity of the same anonymous id. Bot events are left out;
    events stamped more than a day after as_of_date (clock skew, bad devices)
    are excluded. No customer yet: identities change as data arrives,
    int_sessions_stitched attaches the customer at build time.

    The per-event session assignment is never stored: at 20 M events writing
    it cost more than computing it (~30 s at 1 M customers).

    Incremental (delete+insert by anonymous_id) on _loaded_at, not event time,
    so a future timestamp cannot freeze the watermark: every run re-sessionises
    *all* events of the anonymous ids touched by new loads (late events can
    split or join sessions), plus ids with events after the newest session end
    (future events that became eligible as as_of_date moves on). On Spark a
    table rebuilt every run (keyed_incremental in macros/incremental.sql).
-#}

{%- set gap_seconds = var('session_gap_minutes') * 60 %}

with

events as {{ not_materialized_cte() }} (

    select * from {{ ref('int_events_deduplicated') }}
    where anonymous_id is not null
        and event_ts is not null
        and not is_bot
        and event_ts <= {{ as_of_date() }} + interval 1 day

),

{%- set watermark_sql -%}
    select
        coalesce(max(last_loaded_at), {{ watermark_floor() }}) as max_loaded_at,
        coalesce(max(session_end_at), '1900-01-01'::timestamp) as max_event_ts
    from {{ this }}
{%- endset %}
scoped_events as (

    select * from events
    where {{ device_touched_since_last_run('events', watermark_sql) }}

),

gaps as (

    select
        *,
        case
            when lag(event_ts) over by_device is null then 1
            when {{ seconds_between('lag(event_ts) over by_device', 'event_ts') }} > {{ gap_seconds }}
                then 1
            else 0
        end as is_session_start

    from scoped_events
    window by_device as (partition by anonymous_id order by event_ts, message_id)

),

sessionised as (

    select
        *,
        'ses_' || left(md5(anonymous_id || '|' || cast(sum(is_session_start) over (
            partition by anonymous_id
            order by event_ts, message_id
            rows between unbounded preceding and current row
        ) as string)), 16) as session_id

    from gaps

),

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
        {{ arg_min_by('device_type', 'event_ts') }} filter (where device_type is not null) as device_type,
        {{ arg_min_by('campaign_source', 'event_ts') }} filter (
            where campaign_source is not null
        ) as campaign_source,
        {{ arg_min_by('campaign_medium', 'event_ts') }} filter (
            where campaign_medium is not null
        ) as campaign_medium,
        {{ arg_min_by('page_url', 'event_ts') }} filter (where page_url is not null) as landing_page_url,
        max(_loaded_at) as last_loaded_at

    from sessionised
    group by session_id, anonymous_id

)

select * from final
