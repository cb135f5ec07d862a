{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail'
    )
}}

{#-
    Incremental on _loaded_at (append-only raw table): a daily delta prices
    only the new rows. Updates to an order are new rows here;
    int_orders_deduplicated picks the current version. When a seed changes
    (new FX rates must re-price old orders) the pipeline runs a full refresh.
-#}

with

source as (

    select * from {{ source('transactions', 'transactions_orders') }}
    {{ where_loaded_since_last_run() }}

),

fx_rates as (

    select upper(currency) as currency, valid_from, rate_to_usd
    from {{ ref('fx_rates') }}

),

blocked as (

    select identifier_type, lower(trim(value)) as value
    from {{ ref('blocked_identifiers') }}

),

renamed as (

    select
        {{ clean_text('order_id') }} as order_id,
        {{ clean_text('contact_id') }} as contact_id,
        {{ clean_email('email') }} as email,
        {{ to_utc_timestamp('order_ts') }} as order_ts,
        lower(trim(status)) as status,
        upper(trim(currency)) as currency,
        try_cast(trim(total_amount) as decimal(18, 4)) as total_amount,
        coalesce(try_cast(trim(discount_amount) as decimal(18, 4)), 0) as discount_amount,
        try_cast(trim(items_count) as integer) as items_count,
        {{ clean_lower('channel') }} as channel,
        coalesce({{ to_utc_timestamp('updated_at') }}, {{ to_utc_timestamp('order_ts') }}) as updated_at,
        _source_file,
        _line_number,
        _loaded_at,
        _batch_id

    from source

),

-- Rate valid at the order date: latest valid_from <= order_ts (ASOF join,
-- macros/portable.sql).
{%- set reporting_fx_rates %}(
        select valid_from, rate_to_usd
        from fx_rates
        where currency = upper('{{ var("reporting_currency") }}')
    ){% endset %}
priced as (

    select
        renamed.*,
        order_fx.rate_to_usd as order_rate_to_usd
    from renamed
    {{ asof_left_join(
        'fx_rates', 'order_fx', 'renamed.order_ts', 'valid_from',
        equal=[('renamed.currency', 'currency')]
    ) }}

),

reporting_priced as (

    select
        priced.*,
        reporting_fx.rate_to_usd as reporting_rate_to_usd
    from priced
    {{ asof_left_join(reporting_fx_rates, 'reporting_fx', 'priced.order_ts', 'valid_from') }}

),

final as (

    select
        order_id,
        contact_id,
        email,
        {{ is_placeholder_email('email', 'blocked') }} as is_placeholder_email,
        order_ts,
        status,
        currency,
        total_amount,
        discount_amount,
        items_count,
        channel,
        updated_at,
        order_rate_to_usd / reporting_rate_to_usd as fx_rate_to_reporting,
        {{ round_double('cast(total_amount as double) * order_rate_to_usd / reporting_rate_to_usd', 4) }}
            as total_amount_reporting,
        {{ round_double('cast(discount_amount as double) * order_rate_to_usd / reporting_rate_to_usd', 4) }}
            as discount_amount_reporting,
        _source_file,
        _line_number,
        _loaded_at,
        _batch_id

    from reporting_priced

)

select * from final
