with

sales as (

    select * from {{ ref('fct_sales') }}

),

calendar as (

    select * from {{ ref('dim_date') }}

),

daily as (

    select
        date_key,
        count(distinct order_id) as orders,
        count(*) as books_sold,
        sum(sales_amount) as gross_revenue,
        sum(net_sales_amount) as net_revenue,
        count(distinct customer_id) as active_customers

    from sales
    group by date_key

),

-- every day from the first to the last order day, days without orders as zeros
bounds as (

    select
        min(date_key) as first_date_key,
        max(date_key) as last_date_key

    from daily

),

final as (

    select
        calendar.date,
        calendar.date_key,
        coalesce(daily.orders, 0) as orders,
        coalesce(daily.books_sold, 0) as books_sold,
        coalesce(daily.gross_revenue, 0.00) as gross_revenue,
        coalesce(daily.net_revenue, 0.00) as net_revenue,
        coalesce(daily.active_customers, 0) as active_customers

    from calendar
    inner join bounds
        on calendar.date_key between bounds.first_date_key and bounds.last_date_key
    left join daily
        on calendar.date_key = daily.date_key

)

select * from final
