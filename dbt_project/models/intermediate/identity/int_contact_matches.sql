{#-
    Decision on every candidate pair of the probabilistic matcher
    (int_contact_match_pairs). A pair merges (decision = 'merged') only when
      * match_probability >= var('identity_match_probability'), or >=
        var('identity_name_match_probability') when the names agree (exact,
        nickname, typo, swapped, swapped with a typo, surname missing) and
        either the full birth date is equal (or its day and month swapped),
        or the postal code agrees and one typed digit is in the birth date,
        or >= var('identity_dateless_match_probability') when the names
        agree, the postal code agrees and one record has no birth date (a
        new phone alone takes such a pair below 0.5): that is who
        the person is, and a duplicate record usually exists because the
        person came back with a new email, phone or address, all of which the
        model counts against the match; and
      * the first names agree (equal, nickname, typo, swapped with the last
        name, or one is missing): same surname and phone/address but another
        first name is a household member or a twin, never a duplicate;
      * the birth dates do not conflict (missing, equal, day/month swapped or
        one typed character apart are fine);
      * the genders do not conflict (both known and different);
      * something beyond name and place corroborates it: the birth date, the
        email local part (unless both are spelled from the names:
        alexander.green@ one provider and @ another is two Alexander Greens
        as often as one), the phone, or, for a record without a birth date,
        the postal code (same-name neighbours share name and city only);
      * a reviewer has not blocked the pair (seed identity_blocked_pairs);
      * neither contact lacks a birth date while matching two contacts whose
        birth dates conflict (it could be either; it would chain them).
    Otherwise decision names the first guard that stopped it.
-#}

with

pairs as (

    select * from {{ ref('int_contact_match_pairs') }}

),

features as (

    select
        contact_id,
        gender,
        {{ email_local_is_name('email_local', 'first_name_key', 'last_name_key') }}
            as email_local_is_name
    from {{ ref('int_contacts_match_features') }}

),

dates as (

    select contact_id, birth_date from {{ ref('int_contacts_match_features') }}

),

blocked_pairs as (

    select
        least(contact_id_a, contact_id_b) as contact_id_l,
        greatest(contact_id_a, contact_id_b) as contact_id_r,
        any_value(reason) as blocked_reason
    from {{ ref('identity_blocked_pairs') }}
    group by all

),

levels as (

    select
        *,
        name_level in ('exact', 'nickname', 'fuzzy', 'swapped', 'swapped_fuzzy', 'last_missing') as names_agree,
        -- one record has no birth date to conflict with (a father and son
        -- at one address are caught by vetoed_ambiguous below)
        birth_date_level = 'null' and location_level in ('postal_and_city', 'postal')
            as dateless_at_same_postal_code,
        -- one typed digit at the same postal code (a father and son of one
        -- name would need one birthday and years one digit apart)
        birth_date_level = 'one_typo' and location_level in ('postal_and_city', 'postal')
            as date_typo_at_same_postal_code
    from pairs

),

checked as (

    select
        pairs.*,
        pairs.name_level in ('last_exact_only', 'else') as first_names_conflict,
        pairs.birth_date_level = 'else' as birth_dates_conflict,
        coalesce(l.gender <> r.gender, false) as genders_conflict,
        pairs.birth_date_level in ('exact', 'day_month_swapped', 'one_typo')
            or (pairs.email_local_level in ('exact', 'similar')
                and not (coalesce(l.email_local_is_name, false)
                    and coalesce(r.email_local_is_name, false)))
            or pairs.phone_level = 'exact'
            or (names_agree and dateless_at_same_postal_code) as is_corroborated,
        blocked_pairs.contact_id_l is not null as is_blocked,
        case
            when names_agree and dateless_at_same_postal_code
                then {{ var('identity_dateless_match_probability', 0.2) }}
            when names_agree
                and (pairs.birth_date_level in ('exact', 'day_month_swapped')
                    or date_typo_at_same_postal_code)
                then {{ var('identity_name_match_probability', 0.5) }}
            else {{ var('identity_match_probability', 0.99) }}
        end as merge_threshold

    from levels as pairs
    left join features as l on pairs.contact_id_l = l.contact_id
    left join features as r on pairs.contact_id_r = r.contact_id
    left join blocked_pairs
        on pairs.contact_id_l = blocked_pairs.contact_id_l
        and pairs.contact_id_r = blocked_pairs.contact_id_r

),

-- A contact without a birth date that would merge with two contacts whose
-- birth dates conflict (a father and his son) could be either: it merges with
-- neither, so it cannot chain them into one customer.
passing as (

    select contact_id_l, contact_id_r
    from checked
    where not is_blocked
        and match_probability >= merge_threshold
        and not first_names_conflict and not birth_dates_conflict
        and not genders_conflict and is_corroborated

),

partners as (

    select contact_id_l as contact_id, contact_id_r as partner_id from passing
    union all
    select contact_id_r, contact_id_l from passing

),

ambiguous_contacts as (

    select distinct a.contact_id
    from partners as a
    inner join partners as b
        on a.contact_id = b.contact_id and a.partner_id < b.partner_id
    inner join dates as own on a.contact_id = own.contact_id
    inner join dates as pa on a.partner_id = pa.contact_id
    inner join dates as pb on b.partner_id = pb.contact_id
    where own.birth_date is null
        and {{ birth_dates_conflict('pa', 'pb') }}

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
            when match_probability < merge_threshold then 'below_threshold'
            when first_names_conflict then 'vetoed_first_name'
            when birth_dates_conflict then 'vetoed_birth_date'
            when genders_conflict then 'vetoed_gender'
            when not is_corroborated then 'vetoed_uncorroborated'
            when contact_id_l in (select contact_id from ambiguous_contacts)
                or contact_id_r in (select contact_id from ambiguous_contacts)
                then 'vetoed_ambiguous'
            else 'merged'
        end as decision,
        prior_match_probability,
        model_version

    from checked

)

select * from final
