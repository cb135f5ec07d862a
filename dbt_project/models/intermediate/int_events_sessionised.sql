{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='anonymous_id',
        on_schema_change='fail'
    )
}}

{#-
    Events cut into sessions: a new session starts after more than
    var('session_gap_minutes') (30) minutes of inactivity of the same
    anonymous id. Bot events are left out; events stamped more than a day
    after as_of_date (clock skew, bad devices) are excluded.

    Incremental on _loaded_at (not event time, so a future timestamp cannot
    freeze the watermark). Every run recomputes *all* events of the anonymous
    ids touched by new loads (late events can split or join sessions), plus
    ids with events after the newest processed event (future events that
    become eligible as as_of_date moves on); delete+insert replaces those ids.
    customer_id is not stored here: identities change as data arrives, so
    fct_sessions stitches at build time.
-#}

{%- set gap_seconds = var('session_gap_minutes') * 60 %}

with

events as (

    select * from {{ ref('int_events_deduplicated') }}
    where anonymous_id is not null
        and event_ts is not null
        and not is_bot
        and event_ts <= {{ as_of_date() }} + interval 1 day

),

{%- set watermark_sql -%}
    select max(_loaded_at) as max_loaded_at, max(event_ts) as max_event_ts from {{ this }}
{%- endset %}
{{ scope_to_touched_devices('events', watermark_sql) }}

gaps as (

    select
        *,
        case
            when lag(event_ts) over by_device is null then 1
            when date_diff('second', lag(event_ts) over by_device, event_ts) > {{ gap_seconds }}
                then 1
            else 0
        end as is_session_start

    from scoped_events
    window by_device as (partition by anonymous_id order by event_ts, message_id)

),

numbered as (

    select
        *,
        sum(is_session_start) over (
            partition by anonymous_id
            order by event_ts, message_id
            rows between unbounded preceding and current row
        ) as session_number

    from gaps

),

final as (

    select
        message_id,
        anonymous_id,
        user_id,
        event_type,
        event_name,
        event_ts,
        device_type,
        page_url,
        campaign_source,
        campaign_medium,
        session_number,
        'ses_' || left(md5(anonymous_id || '|' || cast(session_number as varchar)), 16) as session_id,
        is_session_start = 1 as is_session_start,
        _loaded_at

    from numbered

)

select * from final
