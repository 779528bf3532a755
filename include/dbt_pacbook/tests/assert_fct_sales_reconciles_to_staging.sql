-- fct_sales must hold every order line of the source once: same row count, same total price.
with

fact_totals as (

    select
        count(*) as line_count,
        coalesce(sum(sales_amount), 0) as total_amount

    from {{ ref('fct_sales') }}

),

source_totals as (

    select
        count(*) as line_count,
        coalesce(sum(price), 0) as total_amount

    from {{ source('pacbook', 'order_line') }}

)

select
    fact_totals.line_count as fact_line_count,
    source_totals.line_count as source_line_count,
    fact_totals.total_amount as fact_total_amount,
    source_totals.total_amount as source_total_amount

from fact_totals
cross join source_totals
where
    fact_totals.line_count != source_totals.line_count
    or fact_totals.total_amount != source_totals.total_amount
