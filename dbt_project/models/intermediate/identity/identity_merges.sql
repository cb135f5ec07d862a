{{ config(schema='audit') }}

{#-
    audit.identity_merges: every pair the probabilistic matcher proposed
    (match_probability >= the candidate_probability of
    int_contact_match_pairs), with the decision taken on it and the comparison
    level of each field that decided the score - for a governance reviewer to
    check a merge, and to block one by adding the pair to seed
    identity_blocked_pairs (honoured on the next run). Only record ids, the
    customer they resolved to, scores and level names: no names, dates,
    emails or phones.
-#}

with

matches as (

    select * from {{ ref('int_contact_matches') }}

),

resolved as (

    select source_id as contact_id, customer_id
    from {{ ref('int_identities_resolved') }}
    where node_type = 'contact'

),

final as (

    select
        matches.contact_id_l,
        matches.contact_id_r,
        left_customer.customer_id,
        right_customer.customer_id as customer_id_r,
        matches.decision,
        {{ round_double('matches.match_probability', 6) }} as match_probability,
        {{ round_double('matches.match_weight', 3) }} as match_weight,
        matches.name_level,
        matches.birth_date_level,
        matches.location_level,
        matches.email_local_level,
        matches.phone_level,
        matches.prior_match_probability,
        matches.model_version

    from matches
    left join resolved as left_customer on matches.contact_id_l = left_customer.contact_id
    left join resolved as right_customer on matches.contact_id_r = right_customer.contact_id

)

select * from final
