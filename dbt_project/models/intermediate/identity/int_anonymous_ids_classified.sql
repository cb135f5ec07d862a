{{ config(**keyed_incremental('anonymous_id')) }}

-- One row per anonymous id with what identity resolution needs: bot (any
-- crawler user agent), and every contact it logged in as and every real
-- email it identified with. Whether it is a shared device is decided after
-- contact resolution (int_identity_components): only when those logins and
-- emails belong to more than one person. A person with two CRM records who
-- logs in with each on one phone is still one person.
-- Incremental: only anonymous ids with newly loaded events are re-aggregated
-- (over all their events) and replaced.

with

events as (

    select * from {{ ref('int_events_deduplicated') }}
    where anonymous_id is not null

),

scoped_events as (

    select * from events
    where {{ key_loaded_since_last_run('events', 'anonymous_id', 'last_loaded_at') }}

),

classified as (

    select
        anonymous_id,
        bool_or(is_bot) as is_bot,
        count(distinct user_id) as distinct_user_ids,
        min(user_id) as user_id,
        {{ sorted_set_agg('user_id', 'user_id is not null') }} as user_ids,
        count(distinct trait_email) filter (
            where event_type = 'identify' and not is_placeholder_email
        ) as distinct_trait_emails,
        min(trait_email) filter (
            where event_type = 'identify' and not is_placeholder_email
        ) as trait_email,
        {{ sorted_set_agg(
            'trait_email',
            "event_type = 'identify' and not is_placeholder_email and trait_email is not null"
        ) }} as trait_emails,
        count(*) as events_count,
        min(event_ts) as first_event_at,
        max(event_ts) as last_event_at,
        max(_loaded_at) as last_loaded_at

    from scoped_events
    group by anonymous_id

),

final as (

    select
        *,
        -- more than one identity seen: a candidate only; resolution decides
        distinct_user_ids > 1 or distinct_trait_emails > 1 as has_several_identities,
        -- retired column, kept false so readers of the old name do not break:
        -- the verdict needs the resolved contacts and lives in
        -- int_identities_resolved.is_shared_device
        false as is_shared_device
    from classified

)

select * from final
