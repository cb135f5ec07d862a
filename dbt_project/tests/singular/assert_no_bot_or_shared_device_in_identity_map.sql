-- Bots and shared devices never resolve to a customer.

select identity_map.source_id, anonymous_ids.is_bot, anonymous_ids.is_shared_device
from {{ ref('identity_map') }} as identity_map
inner join {{ ref('int_anonymous_ids_classified') }} as anonymous_ids
    on identity_map.source = 'analytics'
    and identity_map.source_id = anonymous_ids.anonymous_id
where anonymous_ids.is_bot or anonymous_ids.is_shared_device
