{#-
    Rule-based segments relative to var('as_of_date') (day granularity):
    * RFM quintile scores 1-5 among customers with completed orders
      (percent_rank, so ties share a score; 5 = most recent / most frequent /
      highest spend); null without orders.
    * rfm_segment: the classic R x F grid (Champions ... Lost); 'No purchases'.
    * lifecycle_stage: prospect (no completed order), new (first order within
      30 days), active (last order within 90 days), at_risk (91-180 days),
      churned (more than 180 days).
    * engagement_tier: high (>= 4 sessions in 30 days), medium (>= 1 in 30
      days), low (>= 1 in 90 days), dormant.
-#}

with

customers as (

    select * from {{ ref('int_customers_aggregated') }}

),

buyers as (

    select
        customer_id,
        least(5, 1 + floor(5 * percent_rank() over (order by cast(last_order_at as date))))::integer
            as recency_score,
        least(5, 1 + floor(5 * percent_rank() over (order by orders_count)))::integer
            as frequency_score,
        least(5, 1 + floor(5 * percent_rank() over (order by lifetime_revenue)))::integer
            as monetary_score

    from customers
    where orders_count > 0

),

scored as (

    select
        customers.customer_id,
        customers.orders_count,
        {{ days_between('cast(customers.first_order_at as date)', as_of_date()) }} as days_since_first_order,
        {{ days_between('cast(customers.last_order_at as date)', as_of_date()) }} as days_since_last_order,
        customers.sessions_30d,
        customers.sessions_90d,
        buyers.recency_score,
        buyers.frequency_score,
        buyers.monetary_score

    from customers
    left join buyers on customers.customer_id = buyers.customer_id

),

final as (

    select
        customer_id,
        recency_score,
        frequency_score,
        monetary_score,
        case
            when orders_count = 0 then 'No purchases'
            when recency_score >= 4 and frequency_score >= 4 and monetary_score >= 4 then 'Champions'
            when recency_score <= 1 and frequency_score >= 4 then 'Cannot lose them'
            when recency_score >= 3 and frequency_score >= 4 then 'Loyal'
            when recency_score <= 2 and frequency_score >= 3 then 'At risk'
            when recency_score >= 4 and frequency_score >= 2 then 'Potential loyalist'
            when recency_score >= 4 then 'New'
            when recency_score = 3 and frequency_score <= 1 then 'Promising'
            when recency_score = 3 then 'Need attention'
            when recency_score = 2 then 'Hibernating'
            else 'Lost'
        end as rfm_segment,
        case
            when orders_count = 0 then 'prospect'
            when days_since_first_order <= 30 then 'new'
            when days_since_last_order <= 90 then 'active'
            when days_since_last_order <= 180 then 'at_risk'
            else 'churned'
        end as lifecycle_stage,
        case
            when sessions_30d >= 4 then 'high'
            when sessions_30d >= 1 then 'medium'
            when sessions_90d >= 1 then 'low'
            else 'dormant'
        end as engagement_tier,
        days_since_last_order

    from scored

)

select * from final
