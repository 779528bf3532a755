with

order_lines as (

    select * from {{ ref('stg_pacbook__order_line') }}

),

orders as (

    select * from {{ ref('stg_pacbook__cust_order') }}

),

order_statuses as (

    select * from {{ ref('int_orders_latest_status') }}

),

customers as (

    select * from {{ ref('dim_customer') }}

),

books as (

    select * from {{ ref('dim_book') }}

),

final as (

    select
        order_lines.order_id,
        order_lines.line_id,
        order_lines.book_id,
        books.book_key,
        orders.customer_id,
        customers.customer_key,
        to_char(orders.order_date, 'YYYYMMDD')::integer as date_key,
        orders.order_date,
        orders.shipping_method_id,
        order_lines.price as sales_amount,
        order_statuses.latest_order_status,
        order_statuses.is_net_revenue

    from order_lines
    inner join orders
        on order_lines.order_id = orders.order_id
    left join order_statuses
        on order_lines.order_id = order_statuses.order_id
    left join books
        on order_lines.book_id = books.book_id
    -- point in time: the customer version valid when the order was placed
    left join customers
        on
            orders.customer_id = customers.customer_id
            and orders.order_date >= customers.valid_from
            and orders.order_date < customers.valid_to

)

select * from final
