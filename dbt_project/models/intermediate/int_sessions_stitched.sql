{#-
    One row per session (non-bot anonymous ids), stitched to a customer:
    the customer of the contact the session was logged in as (when exactly
    one), else the customer the anonymous id resolved to. The logged-in rule
    also attributes sessions on shared devices, which resolve to nobody.
-#}

with

events as (

    select * from {{ ref('int_events_sessionised') }}

),

anonymous_ids as (

    select anonymous_id, is_bot from {{ ref('int_anonymous_ids_classified') }}

),

resolved as (

    select node, customer_id
    from {{ ref('int_identities_resolved') }}
    where customer_id is not null and node_type in ('anonymous_id', 'contact')

),

sessions as (

    select
        events.session_id,
        events.anonymous_id,
        min(events.event_ts) as session_start_at,
        max(events.event_ts) as session_end_at,
        count(*) as events_count,
        count(*) filter (where events.event_type = 'page') as page_views_count,
        count(*) filter (where events.event_name = 'Product Viewed') as products_viewed_count,
        count(*) filter (where events.event_name = 'Product Added') as products_added_count,
        count(*) filter (where events.event_name = 'Order Completed') as orders_completed_count,
        count(distinct events.user_id) as distinct_user_ids,
        min(events.user_id) as user_id,
        arg_min(events.device_type, events.event_ts) filter (
            where events.device_type is not null
        ) as device_type,
        arg_min(events.campaign_source, events.event_ts) filter (
            where events.campaign_source is not null
        ) as campaign_source,
        arg_min(events.campaign_medium, events.event_ts) filter (
            where events.campaign_medium is not null
        ) as campaign_medium,
        arg_min(events.page_url, events.event_ts) filter (
            where events.page_url is not null
        ) as landing_page_url

    from events
    inner join anonymous_ids
        on events.anonymous_id = anonymous_ids.anonymous_id
        and not anonymous_ids.is_bot
    group by events.session_id, events.anonymous_id

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
        date_diff('second', sessions.session_start_at, sessions.session_end_at) as duration_seconds,
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
    left join resolved as by_login
        on by_login.node = 'c:' || sessions.user_id
    left join resolved as by_device
        on by_device.node = 'a:' || sessions.anonymous_id

)

select * from final
