{#-
    One row per session (non-bot anonymous ids), stitched to a customer:
    the customer of the contact the session was logged in as (when exactly
    one), else the customer the anonymous id resolved to. The logged-in rule
    also attributes sessions on shared devices, which resolve to nobody.
    Session measures come from int_sessions_aggregated (incremental); only
    the customer is attached here. A view: its two consumers (fct_sessions and
    int_customers_aggregated) read it once each, and writing the ~6 M sessions
    of 1 M customers a second time cost more (7.6 s) than joining twice.
-#}

{{ config(materialized='view') }}

with

sessions as (

    select * from {{ ref('int_sessions_aggregated') }}

),

anonymous_ids as (

    select anonymous_id, is_bot from {{ ref('int_anonymous_ids_classified') }}

),

resolved as (

    select node, customer_id
    from {{ ref('int_identities_resolved') }}
    where customer_id is not null and node_type in ('anonymous_id', 'contact')

),

final as (

    select
        sessions.session_id,
        sessions.anonymous_id,
        coalesce(
            case when sessions.distinct_user_ids = 1 then by_login.customer_id end,
            by_device.customer_id
        ) as customer_id,
        case when sessions.distinct_user_ids = 1 then sessions.user_id end as user_id,
        sessions.session_start_at,
        sessions.session_end_at,
        {{ seconds_between('sessions.session_start_at', 'sessions.session_end_at') }} as duration_seconds,
        sessions.events_count,
        sessions.page_views_count,
        sessions.products_viewed_count,
        sessions.products_added_count,
        sessions.orders_completed_count,
        sessions.device_type,
        coalesce(sessions.device_type in ('mobile', 'tablet'), false) as is_mobile,
        sessions.campaign_source,
        sessions.campaign_medium,
        sessions.landing_page_url

    from sessions
    inner join anonymous_ids
        on sessions.anonymous_id = anonymous_ids.anonymous_id
        and not anonymous_ids.is_bot
    left join resolved as by_login
        on by_login.node = 'c:' || sessions.user_id
    left join resolved as by_device
        on by_device.node = 'a:' || sessions.anonymous_id

)

select * from final
