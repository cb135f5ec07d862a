-- Latest version of each order with its unified customer_id. A view, like
-- int_sessions_stitched: fct_orders and int_customers_aggregated each read it
-- once, so writing the ~3 M orders of 1 M customers here would be a second copy.

{{ config(materialized='view') }}

with

orders as (

    select * from {{ ref('int_orders_deduplicated') }}

),

resolved as (

    select source_id as order_id, customer_id
    from {{ ref('int_identities_resolved') }}
    where node_type = 'order'

),

final as (

    select
        orders.order_id,
        resolved.customer_id,
        orders.contact_id,
        orders.order_ts,
        orders.status,
        orders.status = 'completed' as is_completed,
        orders.currency,
        orders.total_amount,
        orders.discount_amount,
        orders.items_count,
        orders.channel,
        orders.updated_at,
        orders.fx_rate_to_reporting,
        orders.total_amount_reporting,
        orders.discount_amount_reporting,
        orders.versions_count,
        orders._source_file,
        orders._line_number,
        orders._loaded_at

    from orders
    left join resolved on orders.order_id = resolved.order_id

)

select * from final
