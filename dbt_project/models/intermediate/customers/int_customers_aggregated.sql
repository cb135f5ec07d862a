{#-
    One row per unified customer with order and session measures relative to
    var('as_of_date') (day granularity). Feeds customer_features,
    customer_rule_segments and customer_profiles.
-#}

with

customers as (

    select * from {{ ref('int_customer_attributes_survived') }}

),

orders as (

    select * from {{ ref('int_orders_attributed') }}
    where customer_id is not null

),

sessions as (

    select * from {{ ref('int_sessions_stitched') }}
    where customer_id is not null

),

devices as (

    select customer_id, count(*) as devices_count
    from {{ ref('int_identities_resolved') }}
    where node_type = 'anonymous_id' and customer_id is not null
    group by customer_id

),

order_measures as (

    select
        customer_id,
        count(*) filter (where is_completed) as orders_count,
        -- summed as decimals (the amounts are rounded to 4 places): exact and
        -- independent of the aggregation order, so RFM ties do not flip between builds
        coalesce(sum(total_amount_reporting::decimal(18, 4)) filter (where is_completed), 0)
            as lifetime_revenue,
        coalesce(sum(discount_amount_reporting::decimal(18, 4)) filter (where is_completed), 0)
            as lifetime_discount,
        min(order_ts) filter (where is_completed) as first_order_at,
        max(order_ts) filter (where is_completed) as last_order_at,
        count(*) filter (where is_completed and {{ weekday_iso('order_ts') }} in (6, 7)) as weekend_orders_count,
        min(order_ts) as first_any_order_at,
        max(order_ts) as last_any_order_at

    from orders
    group by customer_id

),

session_measures as (

    select
        customer_id,
        count(*) as sessions_count,
        sum(page_views_count) as page_views_count,
        min(session_start_at) as first_session_at,
        max(session_start_at) as last_session_at,
        count(*) filter (
            where session_start_at::date > {{ as_of_date() }} - 30
            and session_start_at::date <= {{ as_of_date() }}
        ) as sessions_30d,
        count(*) filter (
            where session_start_at::date > {{ as_of_date() }} - 90
            and session_start_at::date <= {{ as_of_date() }}
        ) as sessions_90d,
        coalesce(sum(page_views_count) filter (
            where session_start_at::date > {{ as_of_date() }} - 30
            and session_start_at::date <= {{ as_of_date() }}
        ), 0) as page_views_30d,
        coalesce(sum(page_views_count) filter (
            where session_start_at::date > {{ as_of_date() }} - 90
            and session_start_at::date <= {{ as_of_date() }}
        ), 0) as page_views_90d,
        count(*) filter (where is_mobile) as mobile_sessions_count,
        count(*) filter (where {{ weekday_iso('session_start_at') }} in (6, 7)) as weekend_sessions_count,
        coalesce(sum(products_added_count) filter (where orders_completed_count = 0), 0)
            as cart_adds_without_purchase

    from sessions
    group by customer_id

),

final as (

    select
        customers.customer_id,
        customers.marketing_consent,
        customers.contacts_count,
        coalesce(devices.devices_count, 0) as devices_count,
        least(
            customers.first_contact_at, order_measures.first_any_order_at, session_measures.first_session_at
        ) as first_seen_at,
        greatest(
            customers.last_contact_update_at, order_measures.last_any_order_at, session_measures.last_session_at
        ) as last_seen_at,
        coalesce(order_measures.orders_count, 0) as orders_count,
        -- DuckDB's sum of decimal(18, 4) is decimal(38, 4) already; Spark's
        -- is decimal(28, 4): the cast pins one type on both
        cast(coalesce(order_measures.lifetime_revenue, 0) as decimal(38, 4)) as lifetime_revenue,
        cast(coalesce(order_measures.lifetime_discount, 0) as decimal(38, 4)) as lifetime_discount,
        case
            when order_measures.orders_count > 0
                then {{ quotient_double('order_measures.lifetime_revenue', 'order_measures.orders_count') }}
        end as avg_order_value,
        order_measures.first_order_at,
        order_measures.last_order_at,
        coalesce(order_measures.weekend_orders_count, 0) as weekend_orders_count,
        coalesce(session_measures.sessions_count, 0) as sessions_count,
        -- sums of counts: bigint on both engines (DuckDB's sum of a bigint is a
        -- hugeint, which Spark, Parquet and pandas do not have)
        cast(coalesce(session_measures.page_views_count, 0) as bigint) as page_views_count,
        session_measures.last_session_at,
        coalesce(session_measures.sessions_30d, 0) as sessions_30d,
        coalesce(session_measures.sessions_90d, 0) as sessions_90d,
        cast(coalesce(session_measures.page_views_30d, 0) as bigint) as page_views_30d,
        cast(coalesce(session_measures.page_views_90d, 0) as bigint) as page_views_90d,
        coalesce(session_measures.mobile_sessions_count, 0) as mobile_sessions_count,
        coalesce(session_measures.weekend_sessions_count, 0) as weekend_sessions_count,
        cast(coalesce(session_measures.cart_adds_without_purchase, 0) as bigint) as cart_adds_without_purchase,
        customers.email,
        customers.phone_e164,
        customers.country

    from customers
    left join devices on customers.customer_id = devices.customer_id
    left join order_measures on customers.customer_id = order_measures.customer_id
    left join session_measures on customers.customer_id = session_measures.customer_id

)

select * from final
