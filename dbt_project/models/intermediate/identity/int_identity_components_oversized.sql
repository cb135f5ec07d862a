-- Components too big to be one person (more identifier nodes than
-- var('max_component_size')). They were split by contact / order instead of
-- merged; review them (a shared email, a leaked test account, ...).

with

resolved as (

    select * from {{ ref('int_identities_resolved') }}
    where is_oversized

),

final as (

    select
        component_id,
        any_value(component_size) as component_size,
        count(*) filter (where node_type = 'contact') as contacts_count,
        count(*) filter (where node_type = 'email') as emails_count,
        count(*) filter (where node_type = 'order') as orders_count,
        count(*) filter (where node_type = 'anonymous_id') as anonymous_ids_count,
        count(distinct customer_id) as customers_after_split,
        {{ sorted_list_head_agg('node', "node_type <> 'email'", 10) }} as sample_nodes,
        {{ var('max_component_size') }} as max_component_size

    from resolved
    group by component_id

)

select * from final
