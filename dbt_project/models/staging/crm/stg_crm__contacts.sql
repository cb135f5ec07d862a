{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail'
    )
}}

with

source as (

    select * from {{ source('crm', 'crm_contacts') }}
    {{ where_loaded_since_last_run() }}

),

blocked as (

    select identifier_type, lower(trim(value)) as value
    from {{ ref('blocked_identifiers') }}

),

renamed as (

    select
        {{ clean_text('contact_id') }} as contact_id,
        {{ clean_email('email') }} as email,
        {{ clean_text('phone') }} as phone_raw,
        {{ clean_text('first_name') }} as first_name,
        {{ clean_text('last_name') }} as last_name,
        try_cast(nullif(trim(birth_date), '') as date) as birth_date,
        case
            when lower(trim(gender)) in ('f', 'female', 'w', 'woman', 'fem') then 'female'
            when lower(trim(gender)) in ('m', 'male', 'man') then 'male'
            when lower(trim(gender)) in (
                'o', 'other', 'x', 'nonbinary', 'non-binary', 'non binary', 'diverse', 'nb'
            ) then 'other'
            else 'unknown'
        end as gender,
        upper({{ clean_text('country') }}) as country,
        {{ clean_text('city') }} as city,
        {{ clean_text('postal_code') }} as postal_code,
        {{ to_boolean('marketing_consent') }} as marketing_consent,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        _source_file,
        _line_number,
        _loaded_at,
        _batch_id

    from source

),

-- Once per distinct (phone, country): SQL fast path for the common forms,
-- the phonenumbers UDF (Python) only for the rest.
distinct_phones as (

    select distinct phone_raw, country
    from renamed
    where phone_raw is not null

),

phones_normalised as (

    select
        phone_raw,
        country,
        {{ phone_to_e164('phone_raw', 'country') }} as phone_e164
    from distinct_phones

),

final as (

    select
        renamed.contact_id,
        renamed.email,
        {{ is_placeholder_email('renamed.email', 'blocked') }} as is_placeholder_email,
        phones_normalised.phone_e164,
        coalesce(renamed.phone_raw is not null and (
            {{ regexp_replace_all('renamed.phone_raw', "'[^0-9+]'", "''") }}
                in (select value from blocked where identifier_type = 'phone')
            or lower(renamed.phone_raw) in (select value from blocked where identifier_type = 'phone')
            or phones_normalised.phone_e164 in (select value from blocked where identifier_type = 'phone')
        ), false) as is_placeholder_phone,
        renamed.first_name,
        renamed.last_name,
        renamed.birth_date,
        renamed.gender,
        renamed.country,
        renamed.city,
        renamed.postal_code,
        renamed.marketing_consent,
        renamed.created_at,
        renamed.updated_at,
        renamed._source_file,
        renamed._line_number,
        renamed._loaded_at,
        renamed._batch_id

    from renamed
    left join phones_normalised
        on renamed.phone_raw = phones_normalised.phone_raw
        and renamed.country is not distinct from phones_normalised.country

)

select * from final
