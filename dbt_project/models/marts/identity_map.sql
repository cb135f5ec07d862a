{#-
    Source record -> unified customer (DESIGN.md section 5): every CRM contact
    and every order exactly once, every anonymousId that resolved to a
    customer once (bots and shared devices never resolve).
-#}

with

resolved as (

    select * from {{ ref('int_identities_resolved') }}
    where customer_id is not null

),

final as (

    select
        case node_type
            when 'contact' then 'crm'
            when 'order' then 'transactions'
            when 'anonymous_id' then 'analytics'
        end as source,
        source_id,
        customer_id

    from resolved
    where (node_type = 'contact' and is_crm_contact)
        or node_type in ('order', 'anonymous_id')

)

select * from final
