{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail'
    )
}}

-- One row per message_id: the first delivery wins (earliest load, file, line).
-- Incremental on _loaded_at; already-kept message ids are never inserted again.
-- Only the columns downstream models use are kept (long strings such as the
-- user agent stay in staging): at 20 M events, write volume dominates.

with

-- Read three times below: not materialized, each branch scans only what it needs.
events as {{ not_materialized_cte() }} (

    select
        message_id,
        event_type,
        event_name,
        anonymous_id,
        user_id,
        event_ts,
        device_type,
        page_url,
        campaign_source,
        campaign_medium,
        trait_email,
        is_placeholder_email,
        is_bot,
        _source_file,
        _line_number,
        _loaded_at
    from {{ ref('stg_analytics__events') }}
    {{ where_loaded_since_last_run() }}

),

-- Redeliveries are rare: only message ids seen more than once need a window
-- (a hash aggregate over one column instead of sorting every event).
redelivered_message_ids as (

    select message_id
    from events
    group by message_id
    having count(*) > 1

),

first_delivery as (

    select events.*
    from events
    anti join redelivered_message_ids
        on events.message_id is not distinct from redelivered_message_ids.message_id

    union all

    select events.*
    from events
    semi join redelivered_message_ids
        on events.message_id is not distinct from redelivered_message_ids.message_id
    qualify row_number() over (
        partition by events.message_id
        order by events._loaded_at, events._source_file, events._line_number
    ) = 1

)

select first_delivery.*
from first_delivery
{% if is_incremental() %}
anti join {{ this }} as existing
    on first_delivery.message_id = existing.message_id
{% endif %}
