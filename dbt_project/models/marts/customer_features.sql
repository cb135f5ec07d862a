-- Numeric behaviour features per customer: the input of clustering.py.

with

customers as (

    select * from {{ ref('int_customers_aggregated') }}

),

final as (

    select
        customer_id,
        marketing_consent,
        cast({{ days_between('cast(last_order_at as date)', as_of_date()) }} as double) as recency_days,
        cast(orders_count as bigint) as frequency,
        cast(lifetime_revenue as double) as monetary,
        cast(avg_order_value as double) as avg_order_value,
        cast(
            case
                when lifetime_revenue + lifetime_discount > 0
                    then {{ quotient_double('lifetime_discount', '(lifetime_revenue + lifetime_discount)') }}
                else 0
            end as double
        ) as discount_share,
        cast(sessions_30d as bigint) as sessions_30d,
        cast(sessions_90d as bigint) as sessions_90d,
        cast(page_views_30d as bigint) as page_views_30d,
        cast(page_views_90d as bigint) as page_views_90d,
        cast(
            case when sessions_count > 0 then mobile_sessions_count / sessions_count else 0 end
            as double
        ) as mobile_share,
        cast(
            case
                when orders_count > 0 then weekend_orders_count / orders_count
                when sessions_count > 0 then weekend_sessions_count / sessions_count
                else 0
            end as double
        ) as weekend_share,
        cast(cart_adds_without_purchase as bigint) as cart_adds_without_purchase,
        cast(greatest({{ days_between('cast(first_seen_at as date)', as_of_date()) }}, 0) as double)
            as tenure_days

    from customers

)

select * from final
