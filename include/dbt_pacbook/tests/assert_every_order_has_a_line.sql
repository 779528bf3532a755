-- The marts count orders from fct_sales (order lines); an order without any line would be
-- missing from monthly_sales.orders and customer_repeat_orders. Warn if one ever appears.
{{ config(severity='warn') }}

with

orders as (

    select * from {{ ref('stg_pacbook__cust_order') }}

),

order_lines as (

    select * from {{ ref('stg_pacbook__order_line') }}

)

select orders.order_id

from orders
left join order_lines
    on orders.order_id = order_lines.order_id
where order_lines.order_id is null
