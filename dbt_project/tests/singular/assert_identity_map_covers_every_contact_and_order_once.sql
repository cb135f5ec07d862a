-- Every CRM contact and every order (latest version) has exactly one identity_map row,
-- and identity_map has no source record that does not exist.

with

expected as (

    select 'crm' as source, contact_id as source_id from {{ ref('int_contacts_deduplicated') }}
    union all
    select 'transactions', order_id from {{ ref('int_orders_deduplicated') }}

),

mapped as (

    select source, source_id, count(*) as rows_count
    from {{ ref('identity_map') }}
    where source in ('crm', 'transactions')
    group by source, source_id

)

select
    coalesce(expected.source, mapped.source) as source,
    coalesce(expected.source_id, mapped.source_id) as source_id,
    coalesce(mapped.rows_count, 0) as rows_count
from expected
full outer join mapped
    on expected.source = mapped.source
    and expected.source_id = mapped.source_id
where mapped.rows_count is distinct from 1 or expected.source_id is null
