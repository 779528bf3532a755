-- Summed over all days, daily_sales must give back the source: total price of all lines,
-- number of lines and number of orders (every order falls on exactly one day).
with

mart_totals as (

    select
        sum(gross_revenue) as gross_revenue,
        sum(books_sold) as books_sold,
        sum(orders) as orders

    from {{ ref('daily_sales') }}

),

source_totals as (

    select
        (select sum(price) from {{ source('pacbook', 'order_line') }}) as gross_revenue,
        (select count(*) from {{ source('pacbook', 'order_line') }}) as books_sold,
        (select count(*) from {{ source('pacbook', 'cust_order') }}) as orders

)

select
    mart_totals.*,
    source_totals.*

from mart_totals
cross join source_totals
where
    mart_totals.gross_revenue != source_totals.gross_revenue
    or mart_totals.books_sold != source_totals.books_sold
    or mart_totals.orders != source_totals.orders
