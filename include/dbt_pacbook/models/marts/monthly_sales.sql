with

sales as (

    select * from {{ ref('fct_sales') }}

),

final as (

    select
        date_trunc('month', order_date)::date as month,
        count(distinct order_id) as orders,
        count(*) as books_sold,
        sum(sales_amount) as gross_revenue,
        coalesce(sum(sales_amount) filter (where is_net_revenue), 0.00) as net_revenue,
        count(distinct customer_id) as customers

    from sales
    group by 1

)

select * from final
