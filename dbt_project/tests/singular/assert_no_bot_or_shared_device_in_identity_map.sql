-- Bots and shared devices never resolve to a customer. A device is shared when
-- its logins and identify traits resolve to more than one person (decided after
-- contact resolution, in int_identities_resolved), not merely to two CRM records.

with

mapped_devices as (

    select source_id as anonymous_id
    from {{ ref('identity_map') }}
    where source = 'analytics'

),

bots as (

    select anonymous_id
    from {{ ref('int_anonymous_ids_classified') }}
    where is_bot

),

shared_devices as (

    select source_id as anonymous_id
    from {{ ref('int_identities_resolved') }}
    where node_type = 'anonymous_id' and is_shared_device

)

select mapped_devices.anonymous_id, 'bot' as problem
from mapped_devices
inner join bots on mapped_devices.anonymous_id = bots.anonymous_id

union all

select mapped_devices.anonymous_id, 'shared device' as problem
from mapped_devices
inner join shared_devices on mapped_devices.anonymous_id = shared_devices.anonymous_id
