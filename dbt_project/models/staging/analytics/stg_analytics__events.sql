{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail'
    )
}}

{#-
    Incremental on _loaded_at (append-only raw table): a daily delta only
    parses the new lines. is_bot here flags crawler user agents and every event
    of an anonymous id that showed one in the same load or earlier;
    int_anonymous_ids_classified holds the authoritative per-id verdict.
-#}

with

source as (

    select * from {{ source('analytics', 'analytics_events') }}
    {{ where_loaded_since_last_run() }}

),

bot_patterns as (

    select lower(pattern) as pattern from {{ ref('bot_user_agent_patterns') }}

),

blocked as (

    select identifier_type, lower(trim(value)) as value
    from {{ ref('blocked_identifiers') }}

),

{#-
    Free text can carry PII (#15): a page URL `...?utm_medium=email&email=<address>`,
    a referrer with a phone, a campaign name with an address. URLs, referrers and
    campaign fields are scrubbed here, before anything downstream (sessions, marts,
    the published snapshot) sees them: email addresses (also %40-encoded) become
    [email], international phone numbers (+ or %2B and 7+ digits) become [phone], and
    the values of email/phone-named URL parameters become [redacted]. The regexes
    only run on values that contain one of their trigger characters.
-#}
{%- set email_re = "[A-Za-z0-9._%+-]+(@|%40)[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}" -%}
{%- set phone_re = "(\\+|%2[bB])[0-9][0-9 .()%-]{5,}[0-9]" -%}
{%- set param_re = "([?&;#](?i:e-?mail|email_address|phone|phone_number|tel|mobile|msisdn)=)[^&#;]*" -%}
{%- set trigger_re = "@|%40|\\+|%2[bB]|(?i:mail|phone|tel|mobile|msisdn)=" -%}
{#- dbt does not resolve macros defined inside a model, so the scrubbed columns are
    written out by a loop over (expression, column name). -#}
{%- set scrubbed_columns = [
    (list_item('context_values', 3), 'page_url'),
    (list_item('context_values', 4), 'page_referrer'),
    (list_item('context_values', 5), 'campaign_source'),
    (list_item('context_values', 6), 'campaign_medium'),
    (list_item('context_values', 7), 'campaign_name'),
] -%}

-- Each JSON document is parsed once (multi-path extraction), and the parsed
-- rows are materialised: the bot and phone lookups below read them again.
extracted as (

    select
        *,
        {{ json_extract_strings('context', [
            '$.device.type', '$.userAgent', '$.page.url', '$.page.referrer',
            '$.campaign.source', '$.campaign.medium', '$.campaign.name'
        ]) }} as context_values,
        {{ json_extract_strings('traits', ['$.email', '$.phone']) }} as trait_values
    from source

),

parsed as {{ materialized_cte() }} (

    select
        {{ clean_text('message_id') }} as message_id,
        lower(trim(type)) as event_type,
        {{ clean_text('event') }} as event_name,
        {{ clean_text('anonymous_id') }} as anonymous_id,
        {{ clean_text('user_id') }} as user_id,
        {{ to_utc_timestamp('timestamp') }} as event_ts,
        lower({{ list_item('context_values', 1) }}) as device_type,
        {{ list_item('context_values', 2) }} as user_agent,
        {%- for expr, name in scrubbed_columns %}
        case when {{ regex_contains(expr, "'" ~ trigger_re ~ "'") }} then
            {{ regexp_replace_all(
                regexp_replace_all(
                    regexp_replace_all(expr, "'" ~ param_re ~ "'", "'\\1[redacted]'"),
                    "'" ~ email_re ~ "'", "'[email]'"),
                "'" ~ phone_re ~ "'", "'[phone]'") }}
        else {{ expr }} end as {{ name }},
        {%- endfor %}
        {{ clean_email(list_item('trait_values', 1)) }} as trait_email,
        {{ clean_text(list_item('trait_values', 2)) }} as trait_phone_raw,
        _source_file,
        _line_number,
        _loaded_at,
        _batch_id

    from extracted

),

-- Pattern matching and phone parsing run once per distinct value (phones:
-- SQL fast path, the phonenumbers UDF only for unusual forms).
user_agents as (

    select distinct user_agent from parsed where user_agent is not null

),

bot_user_agents as (

    select distinct user_agents.user_agent
    from user_agents
    inner join bot_patterns
        on contains(lower(user_agents.user_agent), bot_patterns.pattern)

),

bot_anonymous_ids as (

    select distinct parsed.anonymous_id
    from parsed
    inner join bot_user_agents on parsed.user_agent = bot_user_agents.user_agent
    where parsed.anonymous_id is not null
    {% if is_incremental() %}
    union
    select distinct anonymous_id from {{ this }} where is_bot and anonymous_id is not null
    {% endif %}

),

trait_phones as (

    select trait_phone_raw, {{ phone_to_e164('trait_phone_raw', 'null') }} as trait_phone_e164
    from (select distinct trait_phone_raw from parsed where trait_phone_raw is not null)

),

final as (

    select
        parsed.message_id,
        parsed.event_type,
        parsed.event_name,
        parsed.anonymous_id,
        parsed.user_id,
        parsed.event_ts,
        parsed.device_type,
        parsed.user_agent,
        parsed.page_url,
        parsed.page_referrer,
        parsed.campaign_source,
        parsed.campaign_medium,
        parsed.campaign_name,
        parsed.trait_email,
        {{ is_placeholder_email('parsed.trait_email', 'blocked') }} as is_placeholder_email,
        trait_phones.trait_phone_e164,
        (
            bot_user_agents.user_agent is not null
            or bot_anonymous_ids.anonymous_id is not null
        ) as is_bot,
        parsed._source_file,
        parsed._line_number,
        parsed._loaded_at,
        parsed._batch_id

    from parsed
    left join bot_user_agents on parsed.user_agent = bot_user_agents.user_agent
    left join bot_anonymous_ids on parsed.anonymous_id = bot_anonymous_ids.anonymous_id
    left join trait_phones on parsed.trait_phone_raw = trait_phones.trait_phone_raw

)

select * from final
