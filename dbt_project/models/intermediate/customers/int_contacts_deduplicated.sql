-- Latest version of each CRM contact: latest updated_at, ties broken by the
-- later load, then the later file/line (a re-delivery of the same version).

with

contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

ranked as (

    select
        *,
        count(*) over (partition by contact_id) as versions_count
    from contacts
    qualify row_number() over (
        partition by contact_id
        order by updated_at desc nulls last, _loaded_at desc, _source_file desc, _line_number desc
    ) = 1

)

select * from ranked
