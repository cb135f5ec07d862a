{#-
    One row per CRM contact (latest version) with the normalised fields the
    probabilistic matcher (int_contact_match_pairs, Splink) compares. Only
    comparison keys: names folded by fold_name (José = Jose, Müller = Mueller),
    the first name's nickname forms (seed name_nicknames), birth date as text
    and with day and month swapped, folded city, postal code without spaces,
    the local part of a real (non-placeholder) mailbox unless it only spells
    the contact's names (john.smith, jsmith82: two namesakes have such local
    parts alike, so comparing them repeats the name comparison), a real phone.
    The train command (python -m segment_warehouse.identity.train) reads this
    table too, so training and prediction see the same features.
-#}

with

contacts as (

    select * from {{ ref('int_contacts_deduplicated') }}

),

placeholders as (

    select identifier_type, value from {{ ref('int_identifier_placeholders') }}

),

nicknames as (

    select
        {{ fold_name('nickname') }} as nickname_key,
        {{ fold_name('canonical_name') }} as canonical_key
    from {{ ref('name_nicknames') }}

),

keyed as (

    select
        contact_id,
        {{ fold_name('first_name') }} as first_name_key,
        {{ fold_name('last_name') }} as last_name_key,
        birth_date,
        case when gender in ('female', 'male') then gender end as gender,
        {{ fold_name('city') }} as city_key,
        nullif(upper({{ regexp_replace_all("coalesce(postal_code, '')", "'[^0-9A-Za-z]'", "''") }}), '') as postal_key,
        case
            when email is not null and not is_placeholder_email
                and email not in (select value from placeholders where identifier_type = 'email')
                then split_part(email, '@', 1)
        end as email_local,
        case
            when phone_e164 is not null and not is_placeholder_phone
                and phone_e164 not in (select value from placeholders where identifier_type = 'phone')
                then phone_e164
        end as phone_e164

    from contacts

),

first_name_forms as (

    -- the key itself plus every full name it is a nickname of, and (for a
    -- full name) itself once more, so two nicknames of one name intersect
    select
        keyed.contact_id,
        {{ distinct_list_with_agg('keyed.first_name_key', 'nicknames.canonical_key') }}
            as first_name_forms
    from keyed
    left join nicknames on keyed.first_name_key = nicknames.nickname_key
    where keyed.first_name_key is not null
    group by keyed.contact_id, keyed.first_name_key

),

final as (

    select
        keyed.contact_id,
        keyed.first_name_key,
        keyed.last_name_key,
        first_name_forms.first_name_forms,
        keyed.first_name_key || ' ' || keyed.last_name_key as full_name_key,
        keyed.birth_date,
        strftime(keyed.birth_date, '%Y-%m-%d') as birth_date_text,
        case
            when day(keyed.birth_date) <= 12 and day(keyed.birth_date) <> month(keyed.birth_date)
                then strftime(keyed.birth_date, '%Y-%d-%m')
        end as birth_date_swapped,
        {{ date_part_bigint('year', 'keyed.birth_date') }} as birth_year,
        {{ date_part_bigint('month', 'keyed.birth_date') }} as birth_month,
        {{ date_part_bigint('day', 'keyed.birth_date') }} as birth_day,
        -- the same for a date and its day/month swap (a blocking key)
        least(
            {{ date_part_bigint('month', 'keyed.birth_date') }},
            {{ date_part_bigint('day', 'keyed.birth_date') }}
        ) * 100
            + greatest(
                {{ date_part_bigint('month', 'keyed.birth_date') }},
                {{ date_part_bigint('day', 'keyed.birth_date') }}
            ) as birth_day_month_set,
        keyed.gender,
        keyed.city_key,
        keyed.postal_key,
        case
            when not {{ email_local_is_name('keyed.email_local', 'keyed.first_name_key', 'keyed.last_name_key') }}
                then keyed.email_local
        end as email_local,
        keyed.phone_e164

    from keyed
    left join first_name_forms on keyed.contact_id = first_name_forms.contact_id

)

select * from final
