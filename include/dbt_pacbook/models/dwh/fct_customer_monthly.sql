with

sales as (

    select * from {{ ref('fct_sales') }}

),

customers as (

    select * from {{ ref('dim_customer') }}

),

calendar as (

    select * from {{ ref('dim_date') }}

),

customer_month_sales as (

    select
        customer_id,
        date_trunc('month', order_date)::date as month,
        count(distinct order_id) as orders,
        count(*) as order_lines,
        sum(sales_amount) as revenue,
        sum(net_sales_amount) as net_revenue

    from sales
    group by customer_id, date_trunc('month', order_date)::date

),

customer_spans as (

    select
        customer_id,
        min(month) as first_order_month

    from customer_month_sales
    group by customer_id

),

-- the last month of data is the month of the latest order in the fact
data_end as (

    select max(month) as last_month from customer_month_sales

),

months as (

    select distinct first_of_month as month from calendar

),

-- every customer x month from their first order month through the last month of data
customer_month_spine as (

    select
        customer_spans.customer_id,
        months.month

    from customer_spans
    cross join data_end
    inner join months
        on
            customer_spans.first_order_month <= months.month
            and data_end.last_month >= months.month

),

filled as (

    select
        customer_month_spine.customer_id,
        customer_month_spine.month,
        coalesce(customer_month_sales.orders, 0) as orders,
        coalesce(customer_month_sales.order_lines, 0) as order_lines,
        coalesce(customer_month_sales.revenue, 0.00) as revenue,
        coalesce(customer_month_sales.net_revenue, 0.00) as net_revenue,
        max(case when customer_month_sales.orders > 0 then customer_month_spine.month end) over (
            partition by customer_month_spine.customer_id
            order by customer_month_spine.month
            rows between unbounded preceding and current row
        ) as last_order_month

    from customer_month_spine
    left join customer_month_sales
        on
            customer_month_spine.customer_id = customer_month_sales.customer_id
            and customer_month_spine.month = customer_month_sales.month

),

final as (

    select
        {{ surrogate_key(['filled.customer_id', 'filled.month']) }} as customer_month_key,
        filled.customer_id,
        -- the customer version valid at the end of the month
        customers.customer_key,
        to_char(filled.month, 'YYYYMMDD')::integer as month_date_key,
        filled.month,
        filled.orders,
        filled.order_lines,
        filled.revenue,
        filled.net_revenue,
        sum(filled.revenue) over (
            partition by filled.customer_id
            order by filled.month
            rows between unbounded preceding and current row
        ) as cumulative_revenue,
        (
            (extract(year from filled.month) - extract(year from filled.last_order_month)) * 12
            + extract(month from filled.month) - extract(month from filled.last_order_month)
        )::integer as months_since_last_order,
        filled.orders > 0 as has_ordered

    from filled
    left join customers
        on
            filled.customer_id = customers.customer_id
            and customers.valid_from < filled.month + interval '1 month'
            and customers.valid_to >= filled.month + interval '1 month'

)

select * from final
