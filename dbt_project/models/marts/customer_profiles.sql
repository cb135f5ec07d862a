{#-
    One row per unified customer (DESIGN.md section 5). PII is pseudonymised
    with the keyed pseudonymise() macro: no raw email or phone in marts.
-#}

with

customers as (

    select * from {{ ref('int_customers_aggregated') }}

),

segments as (

    select * from {{ ref('customer_rule_segments') }}

),

final as (

    select
        customers.customer_id,
        customers.first_seen_at,
        customers.last_seen_at,
        customers.orders_count,
        cast(customers.lifetime_revenue as double) as lifetime_revenue,
        cast(customers.avg_order_value as double) as avg_order_value,
        customers.last_order_at,
        customers.sessions_count,
        customers.page_views_count,
        customers.last_session_at,
        customers.marketing_consent,
        segments.lifecycle_stage,
        segments.recency_score,
        segments.frequency_score,
        segments.monetary_score,
        segments.rfm_segment,
        segments.engagement_tier,
        pseudonymise(customers.email) as email_hash,
        pseudonymise(customers.phone_e164) as phone_hash,
        customers.country,
        customers.contacts_count,
        customers.devices_count

    from customers
    left join segments on customers.customer_id = segments.customer_id

)

select * from final
