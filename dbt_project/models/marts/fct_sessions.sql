-- One row per web/app session (30-minute inactivity, bots excluded).

with

sessions as (

    select * from {{ ref('int_sessions_stitched') }}

),

final as (

    select
        session_id,
        customer_id,
        anonymous_id,
        session_start_at,
        session_end_at,
        cast(session_start_at as date) as session_date,
        duration_seconds,
        events_count,
        page_views_count,
        products_viewed_count,
        products_added_count,
        orders_completed_count,
        device_type,
        is_mobile,
        campaign_source,
        campaign_medium,
        landing_page_url

    from sessions

)

select * from final
