{#-
    One row per identifier node with its unified customer_id.

    * A component is a customer iff it holds a CRM contact or an order;
      anonymous-only / email-only components are not customers.
    * customer_id = 'cus_' || first 16 hex of md5(anchor), anchor = the
      smallest CRM (or order-referenced) contact key in the component, else
      the smallest order key. Same input -> same id; unrelated new data does
      not change it.
    * Components with more than var('max_component_size') identifier nodes
      (contacts, emails, anonymous ids - orders are not counted, a loyal
      customer has many) are not merged: each contact stays its own customer,
      an order goes to its contact_id (else stays alone), anonymous ids in it
      resolve to nobody. They are listed in int_identity_components_oversized.
    * is_shared_device: an anonymous id whose logins / identify emails
      resolved to more than one person (int_identity_components); it is a
      component of its own and resolves to nobody.
-#}

with

components as (

    select * from {{ ref('int_identity_components') }}

),

contacts as (

    select contact_id from {{ ref('int_contacts_deduplicated') }}

),

orders as (

    select order_id, contact_id from {{ ref('int_orders_deduplicated') }}

),

nodes as (

    select
        components.node,
        components.component_id,
        components.is_shared_device,
        case left(components.node, 2)
            when 'c:' then 'contact'
            when 'e:' then 'email'
            when 'o:' then 'order'
            when 'a:' then 'anonymous_id'
        end as node_type,
        substr(components.node, 3) as source_id,
        contacts.contact_id is not null as is_crm_contact,
        'c:' || orders.contact_id as order_contact_node

    from components
    left join contacts
        on left(components.node, 2) = 'c:'
        and substr(components.node, 3) = contacts.contact_id
    left join orders
        on left(components.node, 2) = 'o:'
        and substr(components.node, 3) = orders.order_id

),

-- contact ids referenced by orders anchor a customer even before the CRM
-- record arrives, so the id does not change when it does
order_contact_nodes as (

    select distinct order_contact_node as node from nodes where order_contact_node is not null

),

component_stats as (

    select
        nodes.component_id,
        count(*) filter (where nodes.node_type <> 'order') as identifier_nodes_count,
        count(*) filter (where nodes.is_crm_contact) as crm_contacts_count,
        count(*) filter (where nodes.node_type = 'order') as orders_count,
        count(*) filter (where nodes.node_type = 'email') as emails_count,
        count(*) filter (where nodes.node_type = 'anonymous_id') as anonymous_ids_count,
        min(nodes.node) filter (
            where nodes.is_crm_contact or order_contact_nodes.node is not null
        ) as anchor_contact_node,
        min(nodes.node) filter (where nodes.node_type = 'order') as anchor_order_node

    from nodes
    left join order_contact_nodes on nodes.node = order_contact_nodes.node
    group by nodes.component_id

),

anchored as (

    select
        nodes.node,
        nodes.node_type,
        nodes.source_id,
        nodes.is_crm_contact,
        nodes.is_shared_device,
        nodes.component_id,
        component_stats.identifier_nodes_count,
        component_stats.identifier_nodes_count > {{ var('max_component_size') }} as is_oversized,
        case
            when component_stats.identifier_nodes_count <= {{ var('max_component_size') }}
                then coalesce(component_stats.anchor_contact_node, component_stats.anchor_order_node)
            -- oversized fallback: split by contact / order
            when nodes.node_type = 'contact'
                and (nodes.is_crm_contact or order_contact_nodes.node is not null)
                then nodes.node
            when nodes.node_type = 'order'
                then coalesce(nodes.order_contact_node, nodes.node)
        end as anchor_node

    from nodes
    inner join component_stats on nodes.component_id = component_stats.component_id
    left join order_contact_nodes on nodes.node = order_contact_nodes.node

),

final as (

    select
        node,
        node_type,
        source_id,
        is_crm_contact,
        is_shared_device,
        component_id,
        identifier_nodes_count as component_size,
        is_oversized,
        anchor_node,
        case
            when anchor_node is not null then 'cus_' || left(md5(anchor_node), 16)
        end as customer_id

    from anchored

)

select * from final
