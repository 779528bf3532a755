with

sales as (

    select * from {{ ref('fct_sales') }}

),

orders as (

    select distinct
        customer_id,
        order_id,
        order_date

    from sales

),

customer_orders as (

    select
        customer_id,
        count(*) as orders,
        min(order_date) as first_order_at,
        max(order_date) as last_order_at

    from orders
    group by customer_id

),

final as (

    select
        customer_id,
        orders,
        first_order_at,
        last_order_at,
        case
            when orders > 1
                then round((extract(epoch from last_order_at - first_order_at) / 86400 / (orders - 1))::numeric, 2)
        end as avg_days_between_orders

    from customer_orders

)

select * from final
