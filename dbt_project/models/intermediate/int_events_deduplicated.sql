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

events as (

    select * from {{ ref('stg_analytics__events') }}
    {% if is_incremental() %}
    where _loaded_at > (select coalesce(max(_loaded_at), '1900-01-01'::timestamptz) from {{ this }})
    {% endif %}

),

first_delivery as (

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
    from events
    qualify row_number() over (
        partition by message_id
        order by _loaded_at, _source_file, _line_number
    ) = 1

)

select first_delivery.*
from first_delivery
{% if is_incremental() %}
anti join {{ this }} as existing
    on first_delivery.message_id = existing.message_id
{% endif %}
