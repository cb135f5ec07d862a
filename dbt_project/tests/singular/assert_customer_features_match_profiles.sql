-- customer_features has exactly one row per customer in customer_profiles.

select coalesce(profiles.customer_id, features.customer_id) as customer_id
from {{ ref('customer_profiles') }} as profiles
full outer join {{ ref('customer_features') }} as features
    on profiles.customer_id = features.customer_id
where profiles.customer_id is null or features.customer_id is null
