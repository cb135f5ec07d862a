-- Latest version of each order (a later delivery of the same order_id is an
-- update such as a refund): latest updated_at, then later load, file, line.

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
        order by updated_at desc nulls last, _loaded_at desc, _source_file desc, _line_number desc
    ) = 1

)

select * from ranked
