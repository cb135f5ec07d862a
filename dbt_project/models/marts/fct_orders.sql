-- Latest version of each order, with its customer and reporting-currency amounts.

with

orders as (

    select * from {{ ref('int_orders_attributed') }}

),

final as (

    select
        order_id,
        customer_id,
        order_ts,
        cast(order_ts as date) as order_date,
        status,
        is_completed,
        currency,
        cast(total_amount as double) as total_amount,
        cast(discount_amount as double) as discount_amount,
        items_count,
        channel,
        updated_at,
        fx_rate_to_reporting,
        '{{ var("reporting_currency") | upper }}' as reporting_currency,
        total_amount_reporting,
        discount_amount_reporting,
        versions_count

    from orders

)

select * from final
