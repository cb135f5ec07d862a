-- Completed orders and their revenue in customer_profiles reconcile with the
-- latest order versions in staging (no order lost or double counted by identity resolution).

with

staged_totals as (

    select count(*) as orders_count, coalesce(sum(total_amount_reporting), 0) as revenue
    from (
        select status, total_amount_reporting
        from {{ ref('stg_transactions__orders') }}
        -- the landing contract's order, as int_orders_deduplicated: the later file
        -- wins (a late refund without updated_at too), updated_at breaks ties in a file
        qualify row_number() over (
            partition by order_id
            order by _source_file desc, updated_at desc nulls last, _line_number desc
        ) = 1
    )
    where status = 'completed'

),

profiles as (

    select sum(orders_count) as orders_count, coalesce(sum(lifetime_revenue), 0) as revenue
    from {{ ref('customer_profiles') }}

)

select staged_totals.*, profiles.orders_count as profile_orders, profiles.revenue as profile_revenue
from staged_totals
cross join profiles
where staged_totals.orders_count <> profiles.orders_count
    or abs(staged_totals.revenue - profiles.revenue) > 0.01
