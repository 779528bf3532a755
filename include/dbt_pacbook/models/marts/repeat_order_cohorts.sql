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

orders_ranked as (

    select
        customer_id,
        order_date,
        row_number() over (partition by customer_id order by order_date, order_id) as order_number

    from orders

),

customer_firsts as (

    select
        customer_id,
        max(order_date) filter (where order_number = 1) as first_order_at,
        max(order_date) filter (where order_number = 2) as second_order_at

    from orders_ranked
    group by customer_id

),

customer_gaps as (

    select
        customer_id,
        date_trunc('month', first_order_at)::date as cohort_month,
        second_order_at is not null as has_reordered,
        extract(epoch from second_order_at - first_order_at) / 86400 as days_to_second_order

    from customer_firsts

),

final as (

    select
        cohort_month,
        count(*) as customers,
        count(*) filter (where has_reordered) as reordered_customers,
        round(count(*) filter (where has_reordered)::numeric / count(*), 4) as share_reordered,
        round(avg(days_to_second_order)::numeric, 2) as mean_days_to_second_order,
        round(
            (percentile_cont(0.5) within group (order by days_to_second_order))::numeric, 2
        ) as median_days_to_second_order

    from customer_gaps
    group by cohort_month

)

select * from final
