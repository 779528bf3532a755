with

orders as (

    select * from {{ ref('fct_order_fulfilment') }}

),

shipping_methods as (

    select * from {{ ref('dim_shipping_method') }}

),

final as (

    select
        shipping_methods.method_id,
        max(shipping_methods.method_name) as method_name,
        count(*) as orders,
        sum(orders.order_line_count) as books_sold,
        sum(orders.order_amount) as gross_revenue,
        round(avg(orders.order_amount), 2) as average_order_value,
        round(avg(orders.order_line_count), 2) as average_books_per_order,
        count(*) filter (where orders.is_net_revenue) as net_orders,
        coalesce(sum(orders.order_amount) filter (where orders.is_net_revenue), 0.00) as net_revenue,
        round(avg(orders.order_amount) filter (where orders.is_net_revenue), 2) as average_net_order_value,
        round(avg(orders.shipping_cost), 2) as average_shipping_cost

    from orders
    inner join shipping_methods
        on orders.shipping_method_key = shipping_methods.shipping_method_key
    group by shipping_methods.method_id

)

select * from final
