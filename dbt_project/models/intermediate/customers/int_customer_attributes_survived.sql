{#-
    Survivorship: per customer, the latest non-null value of each attribute
    across the customer's CRM contacts (by updated_at, then contact_id), so a
    newer record with an empty field does not erase a known value. Consent:
    the latest contact with a non-null consent wins. Email / phone fall back
    to the latest non-placeholder checkout email of the customer's orders.
-#}

with

resolved as (

    select * from {{ ref('int_identities_resolved') }}
    where customer_id is not null

),

contacts as (

    select * from {{ ref('int_contacts_deduplicated') }}

),

orders as (

    select * from {{ ref('int_orders_deduplicated') }}

),

customer_contacts as (

    select
        resolved.customer_id,
        contacts.*,
        {{ struct_of([('updated_at', 'contacts.updated_at'), ('contact_id', 'contacts.contact_id')]) }} as recency

    from resolved
    inner join contacts
        on resolved.node_type = 'contact'
        and resolved.source_id = contacts.contact_id

),

contact_attributes as (

    select
        customer_id,
        {{ arg_max_by('email', 'recency') }} filter (where email is not null and not is_placeholder_email) as email,
        {{ arg_max_by('phone_e164', 'recency') }} filter (
            where phone_e164 is not null and not is_placeholder_phone
        ) as phone_e164,
        {{ arg_max_by('first_name', 'recency') }} filter (where first_name is not null) as first_name,
        {{ arg_max_by('last_name', 'recency') }} filter (where last_name is not null) as last_name,
        {{ arg_max_by('birth_date', 'recency') }} filter (where birth_date is not null) as birth_date,
        {{ arg_max_by('gender', 'recency') }} filter (where gender <> 'unknown') as gender,
        {{ arg_max_by('country', 'recency') }} filter (where country is not null) as country,
        {{ arg_max_by('city', 'recency') }} filter (where city is not null) as city,
        {{ arg_max_by('postal_code', 'recency') }} filter (where postal_code is not null) as postal_code,
        {{ arg_max_by('marketing_consent', 'recency') }} filter (
            where marketing_consent is not null
        ) as marketing_consent,
        count(*) as contacts_count,
        min(coalesce(created_at, updated_at)) as first_contact_at,
        max(updated_at) as last_contact_update_at

    from customer_contacts
    group by customer_id

),

order_attributes as (

    select
        resolved.customer_id,
        {{ arg_max_by('orders.email', struct_of([('ts', 'orders.order_ts'), ('id', 'orders.order_id')])) }} filter (
            where orders.email is not null and not orders.is_placeholder_email
        ) as order_email

    from resolved
    inner join orders
        on resolved.node_type = 'order'
        and resolved.source_id = orders.order_id
    group by resolved.customer_id

),

customers as (

    select distinct customer_id from resolved

),

final as (

    select
        customers.customer_id,
        coalesce(contact_attributes.email, order_attributes.order_email) as email,
        contact_attributes.phone_e164,
        contact_attributes.first_name,
        contact_attributes.last_name,
        contact_attributes.birth_date,
        coalesce(contact_attributes.gender, 'unknown') as gender,
        contact_attributes.country,
        contact_attributes.city,
        contact_attributes.postal_code,
        contact_attributes.marketing_consent,
        coalesce(contact_attributes.contacts_count, 0) as contacts_count,
        contact_attributes.first_contact_at,
        contact_attributes.last_contact_update_at

    from customers
    left join contact_attributes on customers.customer_id = contact_attributes.customer_id
    left join order_attributes on customers.customer_id = order_attributes.customer_id

)

select * from final
