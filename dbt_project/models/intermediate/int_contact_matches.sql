{#-
    Decision on every candidate pair of the probabilistic matcher
    (int_contact_match_pairs). A pair merges (decision = 'merged') only when
      * match_probability >= var('identity_match_probability'), and
      * the first names agree (equal, nickname, typo, swapped with the last
        name, or one is missing): same surname and phone/address but another
        first name is a household member or a twin, never a duplicate;
      * the birth dates do not conflict (missing, equal, day/month swapped or
        one typed character apart are fine);
      * the genders do not conflict (both known and different);
      * something beyond name and place corroborates it: the birth date, the
        email local part or the phone (same-name neighbours share name and
        city only);
      * a reviewer has not blocked the pair (seed identity_blocked_pairs).
    Otherwise decision names the first guard that stopped it.
-#}

with

pairs as (

    select * from {{ ref('int_contact_match_pairs') }}

),

features as (

    select contact_id, gender from {{ ref('int_contacts_match_features') }}

),

blocked_pairs as (

    select
        least(contact_id_a, contact_id_b) as contact_id_l,
        greatest(contact_id_a, contact_id_b) as contact_id_r,
        any_value(reason) as blocked_reason
    from {{ ref('identity_blocked_pairs') }}
    group by all

),

checked as (

    select
        pairs.*,
        pairs.name_level in ('last_exact_only', 'else') as first_names_conflict,
        pairs.birth_date_level = 'else' as birth_dates_conflict,
        coalesce(l.gender <> r.gender, false) as genders_conflict,
        pairs.birth_date_level in ('exact', 'day_month_swapped', 'one_typo')
            or pairs.email_local_level in ('exact', 'similar')
            or pairs.phone_level = 'exact' as is_corroborated,
        blocked_pairs.contact_id_l is not null as is_blocked

    from pairs
    left join features as l on pairs.contact_id_l = l.contact_id
    left join features as r on pairs.contact_id_r = r.contact_id
    left join blocked_pairs
        on pairs.contact_id_l = blocked_pairs.contact_id_l
        and pairs.contact_id_r = blocked_pairs.contact_id_r

),

final as (

    select
        contact_id_l,
        contact_id_r,
        match_weight,
        match_probability,
        name_level,
        birth_date_level,
        location_level,
        email_local_level,
        phone_level,
        case
            when is_blocked then 'blocked_by_reviewer'
            when match_probability < {{ var('identity_match_probability', 0.99) }} then 'below_threshold'
            when first_names_conflict then 'vetoed_first_name'
            when birth_dates_conflict then 'vetoed_birth_date'
            when genders_conflict then 'vetoed_gender'
            when not is_corroborated then 'vetoed_uncorroborated'
            else 'merged'
        end as decision,
        model_version

    from checked

)

select * from final
