{#-
    Identifier graph. Node keys are typed so ids of different systems never
    collide: c:<contact_id>, e:<normalised email>, o:<order_id>, a:<anonymous_id>.
    Every CRM contact and every order also gets a self edge so that isolated
    records still become (single-node) components.

    Guards against over-merging:
      * placeholder / blocked emails and phones never create edges;
      * bot anonymous ids and shared devices (>1 logged-in contact or
        >1 identify email) create no edges;
      * a shared phone links two contacts only when the normalised first+last
        name or the birth date also agree (households share landlines). Those
        links are stars to the smallest contact of the group, not cliques, so
        the edge count stays linear in the number of contacts.
-#}

with

contacts as (

    select * from {{ ref('int_contacts_deduplicated') }}

),

orders as (

    select * from {{ ref('int_orders_deduplicated') }}

),

anonymous_ids as (

    select * from {{ ref('int_anonymous_ids_classified') }}
    where not is_bot and not is_shared_device

),

contact_nodes as (

    select 'c:' || contact_id as src_node, 'c:' || contact_id as dst_node, 'node' as edge_type
    from contacts

),

order_nodes as (

    select 'o:' || order_id as src_node, 'o:' || order_id as dst_node, 'node' as edge_type
    from orders

),

contact_emails as (

    select 'c:' || contact_id as src_node, 'e:' || email as dst_node, 'contact_email' as edge_type
    from contacts
    where email is not null and not is_placeholder_email

),

order_contacts as (

    select 'o:' || order_id as src_node, 'c:' || contact_id as dst_node, 'order_contact' as edge_type
    from orders
    where contact_id is not null

),

order_emails as (

    select 'o:' || order_id as src_node, 'e:' || email as dst_node, 'order_email' as edge_type
    from orders
    where email is not null and not is_placeholder_email

),

device_logins as (

    select 'a:' || anonymous_id as src_node, 'c:' || user_id as dst_node, 'device_login' as edge_type
    from anonymous_ids
    where distinct_user_ids = 1

),

device_identifies as (

    select 'a:' || anonymous_id as src_node, 'e:' || trait_email as dst_node, 'device_identify' as edge_type
    from anonymous_ids
    where distinct_trait_emails = 1

),

phone_contacts as (

    select
        contact_id,
        phone_e164,
        {{ name_key('first_name') }} as first_name_key,
        {{ name_key('last_name') }} as last_name_key,
        birth_date
    from contacts
    where phone_e164 is not null and not is_placeholder_phone

),

phone_same_name as (

    select
        'c:' || contact_id as src_node,
        'c:' || min(contact_id) over (partition by phone_e164, first_name_key, last_name_key) as dst_node,
        'phone_same_name' as edge_type
    from phone_contacts
    where first_name_key is not null and last_name_key is not null

),

phone_same_birth_date as (

    select
        'c:' || contact_id as src_node,
        'c:' || min(contact_id) over (partition by phone_e164, birth_date) as dst_node,
        'phone_same_birth_date' as edge_type
    from phone_contacts
    where birth_date is not null

),

unioned as (

    select * from contact_nodes
    union all select * from order_nodes
    union all select * from contact_emails
    union all select * from order_contacts
    union all select * from order_emails
    union all select * from device_logins
    union all select * from device_identifies
    union all select * from phone_same_name where src_node <> dst_node
    union all select * from phone_same_birth_date where src_node <> dst_node

)

select distinct src_node, dst_node, edge_type
from unioned
