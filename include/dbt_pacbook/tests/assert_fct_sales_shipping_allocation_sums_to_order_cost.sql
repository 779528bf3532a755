-- The shipping cost allocated to an order's lines must add up exactly (to the cent) to the
-- order's shipping cost, and no line may get a negative share. An order's lines are always
-- written together, so the rows of recent builds hold whole orders (macros/rows_since_the_last_passed_build.sql).
with

order_allocations as (

    select
        order_id,
        sum(shipping_cost_allocated) as allocated_total,
        min(order_shipping_cost) as order_shipping_cost,
        max(order_shipping_cost) as order_shipping_cost_max,
        min(shipping_cost_allocated) as smallest_share

    from {{ ref('fct_sales') }}
    where {{ rows_since_the_last_passed_build(ref('fct_sales')) }}
    group by order_id

)

select *

from order_allocations
where
    allocated_total != order_shipping_cost
    or order_shipping_cost != order_shipping_cost_max
    or smallest_share < 0
