-- Latest version of each order. The landing contract says the same order_id
-- in a later file is an update (e.g. a refund) and files are processed in name
-- order, so delivery order decides; updated_at is optional and only breaks ties
-- inside one file, then the later line wins.

with

orders as (

    select * from {{ ref('stg_transactions__orders') }}

),

ranked as (

    select
        *,
        count(*) over (partition by order_id) as versions_count
    from orders
    qualify row_number() over (
        partition by order_id
        order by _source_file desc, updated_at desc nulls last, _line_number desc
    ) = 1

)

select * from ranked
