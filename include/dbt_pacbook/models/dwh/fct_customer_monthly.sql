{#
    Incremental by customer. A night of new orders changes the rows of the few customers who
    ordered, and adds a month row for everyone only when a new month of data begins; rebuilding
    all customer x month rows (4.6 M at scale 100) took most of a nightly build (bench/README.md).

    A customer's rows are restated in full when what they were built from changed: their order
    lines (count, amounts and latest arrival, so new, restated and removed lines all show, and so
    does fct_sales rebuilt from scratch with other amounts) or their customer versions (a
    fingerprint of the version history). Everyone else only gets the new
    months carried forward from their last row. A customer left without sales (his orders moved
    out of staging) gets a row without a month. The strategy replace_customer_months swaps a
    restated customer's rows and deletes those of a customer gone (macros/replace_customer_months.sql).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='replace_customer_months',
        on_schema_change='fail',
        post_hook=['{{ analyze_if_never_analyzed() }}', '{{ analyze_built_at() }}'],
        indexes=[
            {'columns': ['customer_id', 'month'], 'unique': true}, {'columns': ['month']}, {'columns': ['built_at']},
        ],
    )
}}

-- the incremental branch adds whole CTEs: they stay at the CTE level
-- sqlfluff:indentation:template_blocks_indent:False

with

-- the columns used, not every one: the CTE is read four times, and materialised whole it made
-- the incremental build scan 1.5 M wide rows three times at scale 100
sales as (

    select
        order_id,
        customer_id,
        order_date,
        sales_amount,
        net_sales_amount,
        loaded_at

    from {{ ref('fct_sales') }}

),

customers as (

    select * from {{ ref('dim_customer') }}

),

calendar as (

    select * from {{ ref('dim_date') }}

),

months as (

    select distinct first_of_month as month from calendar

),

sales_by_customer as (

    select
        customer_id,
        count(*) as lifetime_order_lines,
        sum(sales_amount) as lifetime_revenue,
        sum(net_sales_amount) as lifetime_net_revenue,
        max(loaded_at) as sales_loaded_at,
        max(order_date) as last_order_date

    from sales
    group by customer_id

),

-- the last month of data is the month of the latest order in the fact
data_end as (

    select date_trunc('month', max(last_order_date))::date as last_month from sales_by_customer

),

versions_by_customer as (

    select
        customer_id,
        ('x' || left(md5(string_agg(customer_key || '/' || valid_to::text, ',' order by valid_from)), 16))
        ::bit(64)::bigint as customer_versions_fingerprint

    from customers
    group by customer_id

),

-- what each customer's rows are built from
customer_inputs as (

    select
        sales_by_customer.customer_id,
        sales_by_customer.lifetime_order_lines,
        sales_by_customer.lifetime_revenue,
        sales_by_customer.lifetime_net_revenue,
        sales_by_customer.sales_loaded_at,
        versions_by_customer.customer_versions_fingerprint

    from sales_by_customer
    left join versions_by_customer
        on sales_by_customer.customer_id = versions_by_customer.customer_id

),

{% if is_incremental() %}

previous_build as (

    select max(month) as last_month from {{ this }}

),

previous_last_rows as (

    select built.*

    from {{ this }} as built
    inner join previous_build
        on built.month = previous_build.last_month

),

-- new customers, customers whose lines or versions changed, and everyone when the last month
-- of data moved back (its orders were removed)
restated_customers as (

    select customer_inputs.customer_id

    from customer_inputs
    cross join data_end
    cross join previous_build
    left join previous_last_rows
        on customer_inputs.customer_id = previous_last_rows.customer_id
    where
        previous_last_rows.customer_id is null
        or customer_inputs.lifetime_order_lines <> previous_last_rows.cumulative_order_lines
        or customer_inputs.lifetime_revenue <> previous_last_rows.cumulative_revenue
        or customer_inputs.lifetime_net_revenue <> previous_last_rows.cumulative_net_revenue
        or customer_inputs.sales_loaded_at is distinct from previous_last_rows.sales_loaded_at
        or customer_inputs.customer_versions_fingerprint
        is distinct from previous_last_rows.customer_versions_fingerprint
        or data_end.last_month < previous_build.last_month

),

-- the months a new month of data adds to everyone else who still has sales, nothing ordered in them
carried_forward as (

    select
        previous_last_rows.customer_id,
        months.month,
        0::bigint as orders,
        0::bigint as order_lines,
        0.00 as revenue,
        0.00 as net_revenue,
        previous_last_rows.cumulative_revenue,
        previous_last_rows.cumulative_net_revenue,
        previous_last_rows.cumulative_order_lines,
        previous_last_rows.months_since_last_order
        + {{ months_between('months.month', 'previous_last_rows.month') }} as months_since_last_order,
        previous_last_rows.sales_loaded_at,
        previous_last_rows.customer_versions_fingerprint

    from previous_last_rows
    cross join data_end
    inner join customer_inputs
        on previous_last_rows.customer_id = customer_inputs.customer_id
    inner join months
        on
            previous_last_rows.month < months.month
            and data_end.last_month >= months.month
    where
        not exists (
            select from restated_customers
            where restated_customers.customer_id = previous_last_rows.customer_id
        )

),

-- customers with no sales left: a row without a month tells the strategy to delete theirs
customers_gone as (

    select previous_last_rows.customer_id

    from previous_last_rows
    left join customer_inputs
        on previous_last_rows.customer_id = customer_inputs.customer_id
    where customer_inputs.customer_id is null

),

gone_markers as (

    select
        customer_id,
        null::date as month,
        0::bigint as orders,
        0::bigint as order_lines,
        0.00 as revenue,
        0.00 as net_revenue,
        0.00 as cumulative_revenue,
        0.00 as cumulative_net_revenue,
        0::bigint as cumulative_order_lines,
        null::integer as months_since_last_order,
        null::timestamptz as sales_loaded_at,
        null::bigint as customer_versions_fingerprint

    from customers_gone

),

{% endif %}

restated_sales as (

    select sales.*

    from sales
    {% if is_incremental() -%}
    inner join restated_customers
        on sales.customer_id = restated_customers.customer_id
    {%- endif %}

),

customer_month_sales as (

    select
        customer_id,
        date_trunc('month', order_date)::date as month,
        count(distinct order_id) as orders,
        count(*) as order_lines,
        sum(sales_amount) as revenue,
        sum(net_sales_amount) as net_revenue

    from restated_sales
    group by customer_id, date_trunc('month', order_date)::date

),

customer_spans as (

    select
        customer_id,
        min(month) as first_order_month

    from customer_month_sales
    group by customer_id

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

restated as (

    select
        filled.customer_id,
        filled.month,
        filled.orders,
        filled.order_lines,
        filled.revenue,
        filled.net_revenue,
        sum(filled.revenue) over cumulative as cumulative_revenue,
        sum(filled.net_revenue) over cumulative as cumulative_net_revenue,
        (sum(filled.order_lines) over cumulative)::bigint as cumulative_order_lines,
        {{ months_between('filled.month', 'filled.last_order_month') }} as months_since_last_order,
        customer_inputs.sales_loaded_at,
        customer_inputs.customer_versions_fingerprint

    from filled
    inner join customer_inputs
        on filled.customer_id = customer_inputs.customer_id
    window cumulative as (
        partition by filled.customer_id
        order by filled.month
        rows between unbounded preceding and current row
    )

),

customer_months as (

    select * from restated
    {% if is_incremental() -%}
    union all
    select * from carried_forward
    union all
    select * from gone_markers
    {%- endif %}

),

final as (

    select
        {{ surrogate_key(['customer_months.customer_id', 'customer_months.month']) }} as customer_month_key,
        customer_months.customer_id,
        -- the customer version valid at the end of the month
        customers.customer_key,
        to_char(customer_months.month, 'YYYYMMDD')::integer as month_date_key,
        customer_months.month,
        customer_months.orders,
        customer_months.order_lines,
        customer_months.revenue,
        customer_months.net_revenue,
        customer_months.cumulative_revenue,
        customer_months.cumulative_net_revenue,
        customer_months.cumulative_order_lines,
        customer_months.months_since_last_order,
        customer_months.orders > 0 as has_ordered,
        customer_months.sales_loaded_at,
        customer_months.customer_versions_fingerprint,
        -- the build's transaction time: the data tests check recent builds' rows
        -- (macros/rows_since_the_last_passed_build.sql)
        now() as built_at

    from customer_months
    left join customers
        on
            customer_months.customer_id = customers.customer_id
            and customers.valid_from < customer_months.month + interval '1 month'
            and customers.valid_to >= customer_months.month + interval '1 month'

)

select * from final
