{#-
    Identifier graph. Node keys are typed so ids of different systems never
    collide: c:<contact_id>, e:<mailbox>, o:<order_id>, a:<anonymous_id>.
    Every CRM contact and every order also gets a self edge so that isolated
    records still become (single-node) components.

    Backbone (deterministic identifiers plus guarded probabilistic matches):
      * contact-email, order-contact, order-email. Emails are mailboxes
        (staging folds gmail dots / +tags where the provider does);
        placeholders - seed blocked_identifiers or found in the data
        (int_identifier_placeholders) - never create edges;
      * phone_match: two contacts on one real phone only when the first names
        are compatible (equal or nickname forms), the birth dates do not
        conflict (a father and son share name and landline, not birth date),
        and the last names or the birth dates agree (twins share phone,
        surname and birth date, not first name); on a phone where two such
        people meet, a record without a birth date links to neither; a pair
        the matcher vetoed (int_contact_matches: conflicting first names, birth
        dates or genders, or a dateless record between two conflicting ones)
        is not linked by its phone either;
      * probabilistic: Splink matches that passed the guards
        (int_contact_matches, decision = 'merged').
      A pair in seed identity_blocked_pairs gets neither contact-contact edge.

    Device candidates (device_login, device_identify): every login contact and
    identify email of a non-bot anonymous id. int_identity_components keeps
    them only when they all resolve to one person (else: shared device).
-#}

with

contacts as (

    select * from {{ ref('int_contacts_deduplicated') }}

),

orders as (

    select * from {{ ref('int_orders_deduplicated') }}

),

anonymous_ids as (

    select * from {{ ref('int_anonymous_ids_classified') }}
    where not is_bot

),

placeholder_emails as (

    select value from {{ ref('int_identifier_placeholders') }} where identifier_type = 'email'

),

features as (

    select * from {{ ref('int_contacts_match_features') }}

),

-- pairs a shared phone never links: blocked by a reviewer, or vetoed by the
-- matcher (its ambiguity check also sees names written the wrong way round,
-- which the phone rule's does not)
phone_refused_pairs as (

    select least(contact_id_a, contact_id_b) as contact_id_l, greatest(contact_id_a, contact_id_b) as contact_id_r
    from {{ ref('identity_blocked_pairs') }}
    union
    select least(contact_id_l, contact_id_r), greatest(contact_id_l, contact_id_r)
    from {{ ref('int_contact_matches') }}
    where decision like 'vetoed%'

),

contact_nodes as (

    select 'c:' || contact_id as src_node, 'c:' || contact_id as dst_node, 'node' as edge_type
    from contacts

),

order_nodes as (

    select 'o:' || order_id as src_node, 'o:' || order_id as dst_node, 'node' as edge_type
    from orders

),

contact_emails as (

    select 'c:' || contact_id as src_node, 'e:' || email as dst_node, 'contact_email' as edge_type
    from contacts
    where email is not null and not is_placeholder_email
        and email not in (select value from placeholder_emails)

),

order_contacts as (

    select 'o:' || order_id as src_node, 'c:' || contact_id as dst_node, 'order_contact' as edge_type
    from orders
    where contact_id is not null

),

order_emails as (

    select 'o:' || order_id as src_node, 'e:' || email as dst_node, 'order_email' as edge_type
    from orders
    where email is not null and not is_placeholder_email
        and email not in (select value from placeholder_emails)

),

-- features.phone_e164 is null for seed and data-driven placeholders
phone_pairs as (

    select
        l.phone_e164,
        l.contact_id as contact_id_l,
        r.contact_id as contact_id_r,
        l.birth_date is not null and r.birth_date is not null as birth_dates_known,
        l.first_name_key = r.first_name_key
            or {{ lists_overlap('l.first_name_forms', 'r.first_name_forms') }} as first_names_compatible,
        l.last_name_key = r.last_name_key as last_names_equal,
        l.birth_date = r.birth_date as birth_dates_equal,
        {{ birth_dates_conflict('l', 'r') }} as birth_dates_conflict

    from features as l
    inner join features as r
        on l.phone_e164 = r.phone_e164
        and l.contact_id < r.contact_id

),

-- a phone with two people of one name and conflicting birth dates (father and
-- son): a record without a birth date on it could be either, so it links to
-- neither (else it would chain the two)
ambiguous_phones as (

    select distinct phone_e164
    from phone_pairs
    where coalesce(first_names_compatible, false) and coalesce(last_names_equal, false)
        and birth_dates_conflict

),

phone_matches as (

    select 'c:' || contact_id_l as src_node, 'c:' || contact_id_r as dst_node, 'phone_match' as edge_type
    from phone_pairs
    where coalesce(first_names_compatible, false)
        and not birth_dates_conflict
        and (coalesce(last_names_equal, false) or coalesce(birth_dates_equal, false))
        and (birth_dates_known or phone_e164 not in (select phone_e164 from ambiguous_phones))
        and not exists (
            select 1 from phone_refused_pairs
            where phone_refused_pairs.contact_id_l = phone_pairs.contact_id_l
                and phone_refused_pairs.contact_id_r = phone_pairs.contact_id_r
        )

),

probabilistic_matches as (

    select 'c:' || contact_id_l as src_node, 'c:' || contact_id_r as dst_node, 'probabilistic' as edge_type
    from {{ ref('int_contact_matches') }}
    where decision = 'merged'

),

device_logins as (

    select 'a:' || anonymous_id as src_node, 'c:' || {{ unnest_item('user_ids') }} as dst_node, 'device_login' as edge_type
    from anonymous_ids {{ unnest_from('user_ids') }}

),

device_identifies as (

    select
        'a:' || anonymous_id as src_node,
        'e:' || {{ unnest_item('trait_emails') }} as dst_node,
        'device_identify' as edge_type
    from anonymous_ids {{ unnest_from('trait_emails') }}

),

unioned as (

    select * from contact_nodes
    union all select * from order_nodes
    union all select * from contact_emails
    union all select * from order_contacts
    union all select * from order_emails
    union all select * from phone_matches
    union all select * from probabilistic_matches
    union all select * from device_logins
    union all
    select * from device_identifies
    where substr(dst_node, 3) not in (select value from placeholder_emails)

)

select distinct src_node, dst_node, edge_type
from unioned
