{#-
    Placeholders found in the data rather than listed in seed
    blocked_identifiers: an email or phone that CRM contacts of several
    evidently different people share (nomail@nomail.com, 000-000, a shop's
    own number). "Different people" = at least var('placeholder_min_people', 3)
    different last names, or that many different first names and that many
    different birth dates (a person's own duplicate records vary in one of
    them, not in all). Such a value identifies nobody: it creates no identity
    edge for contacts, orders or devices, and the matcher ignores it.
-#}

with

contacts as (

    select * from {{ ref('int_contacts_deduplicated') }}

),

holders as (

    select 'email' as identifier_type, email as value, contact_id, first_name, last_name, birth_date
    from contacts
    where email is not null and not is_placeholder_email
    union all
    select 'phone', phone_e164, contact_id, first_name, last_name, birth_date
    from contacts
    where phone_e164 is not null and not is_placeholder_phone

),

counted as (

    select
        identifier_type,
        value,
        count(distinct contact_id) as contacts_count,
        count(distinct {{ fold_name('first_name') }}) as first_names_count,
        count(distinct {{ fold_name('last_name') }}) as last_names_count,
        count(distinct birth_date) as birth_dates_count

    from holders
    group by identifier_type, value
    having count(distinct contact_id) >= {{ var('placeholder_min_people', 3) }}

),

final as (

    select *
    from counted
    where last_names_count >= {{ var('placeholder_min_people', 3) }}
        or (
            first_names_count >= {{ var('placeholder_min_people', 3) }}
            and birth_dates_count >= {{ var('placeholder_min_people', 3) }}
        )

)

select * from final
