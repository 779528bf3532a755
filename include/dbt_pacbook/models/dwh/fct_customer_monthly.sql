{#
    Incremental by customer. A night of new orders changes the rows of the few customers who
    ordered, and adds a month row for everyone only when a new month of data begins; rebuilding
    all customer x month rows (4.6 M at scale 100) took most of a nightly build (bench/README.md).

    A customer's rows are restated in full when what they were built from changed: their order
    lines (count, amounts and latest arrival, so new, restated and removed lines all show, and so
    does fct_sales rebuilt from scratch with other amounts) or their customer versions (a
    fingerprint of the version history); only from the first month of his lines fct_sales wrote
    anew when everything before it is unchanged (restatement_starts). Everyone else only gets the
    new months carried forward from their last row. A customer left without sales (his orders moved
    out of staging) gets a row without a month. The strategy replace_customer_months swaps a
    restated customer's rows and deletes those of a customer gone (macros/replace_customer_months.sql).

    Whose lines to compare: fct_sales writes every line it keeps with the build's time (built_at),
    so only the customers with lines written since this model's last build, or with new versions,
    can have gained or changed lines; anyone else can only have lost some (an order gone from
    staging, or moved to another customer). One count tells: when the lines of everyone else still
    add up to what the last build counted for them, the night compares the night's customers only
    (their lines found by index); otherwise, or when the last month of data moved back, it compares
    every customer, as a full rebuild would. Aggregating all 1.5 M lines to find the few hundred
    customers to restate took 4.6 s of this model's 5.6 s at scale 100 (bench/README.md, figure 4).
#}
{{
    config(
        materialized='incremental',
        incremental_strategy='replace_customer_months',
        on_schema_change='fail',
        contract={'enforced': true},
        post_hook=['{{ analyze_if_never_analyzed() }}', '{{ analyze_built_at() }}'],
        indexes=[
            {'columns': ['customer_id', 'month'], 'unique': true}, {'columns': ['month']}, {'columns': ['built_at']},
        ],
    )
}}

-- the incremental branch adds whole CTEs: they stay at the CTE level
-- sqlfluff:indentation:template_blocks_indent:False

with

-- the columns used, not every one; not materialized, so that each use reads only the lines it
-- needs (by index on a night) instead of all 1.5 M wide rows copied once (scale 100)
sales as not materialized (

    select
        order_id,
        customer_id,
        order_date,
        sales_amount,
        net_sales_amount,
        loaded_at,
        built_at

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

versions_by_customer as (

    select
        customer_id,
        ('x' || left(md5(string_agg(customer_key || '/' || valid_to::text, ',' order by valid_from)), 16))
        ::bit(64)::bigint as customer_versions_fingerprint

    from customers
    group by customer_id

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

-- one pass over the fact, without grouping
sales_totals as (

    select
        count(*) as order_lines,
        date_trunc('month', max(order_date))::date as last_month

    from sales

),

-- customers with lines fct_sales wrote since this model's last build, and the first month of them
first_rewritten_months as (

    select
        customer_id,
        date_trunc('month', min(order_date))::date as first_month

    from sales
    where {{ written_since_the_last_build() }}
    group by customer_id

),

customers_with_new_versions as (

    select versions_by_customer.customer_id

    from versions_by_customer
    inner join previous_last_rows
        on versions_by_customer.customer_id = previous_last_rows.customer_id
    where
        versions_by_customer.customer_versions_fingerprint
        is distinct from previous_last_rows.customer_versions_fingerprint

),

night_customers as (

    select customer_id from first_rewritten_months
    union
    select customer_id from customers_with_new_versions

),

-- everyone else kept every line the last build counted, and the last month of data did not move back
others_unchanged as (

    select
        sales_totals.order_lines - (
            select count(*) from sales
            where sales.customer_id in (select night_customers.customer_id from night_customers)
        ) = (
            select coalesce(sum(previous_last_rows.cumulative_order_lines), 0) from previous_last_rows
            where
                not exists (
                    select from night_customers
                    where night_customers.customer_id = previous_last_rows.customer_id
                )
        )
        and sales_totals.last_month >= previous_build.last_month as holds

    from sales_totals
    cross join previous_build

),

compared_customers as (

    select customer_id from night_customers
    union
    select previous_last_rows.customer_id
    from previous_last_rows
    cross join others_unchanged
    where not others_unchanged.holds

),

{% endif %}

sales_by_customer as (

    select
        customer_id,
        count(*) as lifetime_order_lines,
        sum(sales_amount) as lifetime_revenue,
        sum(net_sales_amount) as lifetime_net_revenue,
        max(loaded_at) as sales_loaded_at,
        max(order_date) as last_order_date

    from sales
    {% if is_incremental() -%}
    where customer_id in (select compared_customers.customer_id from compared_customers)
    {%- endif %}
    group by customer_id

),

-- the last month of data is the month of the latest order in the fact
data_end as (

    {% if is_incremental() -%}
    select last_month from sales_totals
    {%- else -%}
    select date_trunc('month', max(last_order_date))::date as last_month from sales_by_customer
    {%- endif %}

),

-- what each compared customer's rows are built from
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

-- their lines, by index (an array: joined, the planner hashed all 1.5 M lines at scale 100)
rewritten_customers_lines as (

    select
        customer_id,
        order_date,
        sales_amount,
        net_sales_amount

    from sales
    where customer_id = any(array(select first_rewritten_months.customer_id from first_rewritten_months))

),

-- what the customers with rewritten lines had ordered before the first month of them
lines_before_the_rewrite as (

    select
        first_rewritten_months.customer_id,
        count(earlier_lines.customer_id) as order_lines,
        coalesce(sum(earlier_lines.sales_amount), 0) as revenue,
        coalesce(sum(earlier_lines.net_sales_amount), 0) as net_revenue

    from first_rewritten_months
    left join rewritten_customers_lines as earlier_lines
        on
            first_rewritten_months.customer_id = earlier_lines.customer_id
            and first_rewritten_months.first_month > earlier_lines.order_date
    group by first_rewritten_months.customer_id

),

-- compared customers who are new or whose lines or versions changed, and every compared
-- customer when the last month of data moved back (its orders were removed)
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

-- Each restated customer is restated from the first month of his rewritten lines when what he
-- ordered before it still adds up to his row of the month before and his versions did not change
-- (a new order restates one month, a late status the months from its order on); otherwise
-- (restated_from null) his whole history is. Grouped by customer, one row each: so the planner
-- expects few rows, where the chain of left joins made it expect billions and plan a hash join
-- of 65,536 batches (34 s at scale 100).
restatement_starts as (

    select
        restated_customers.customer_id,
        max(
            case
                when
                    previous_last_rows.customer_id is not null
                    and customer_inputs.customer_versions_fingerprint
                    = previous_last_rows.customer_versions_fingerprint
                    and data_end.last_month >= previous_build.last_month
                    and lines_before_the_rewrite.order_lines = coalesce(month_before.cumulative_order_lines, 0)
                    and lines_before_the_rewrite.revenue = coalesce(month_before.cumulative_revenue, 0)
                    and lines_before_the_rewrite.net_revenue = coalesce(month_before.cumulative_net_revenue, 0)
                    then first_rewritten_months.first_month
            end
        ) as restated_from

    from restated_customers
    cross join data_end
    cross join previous_build
    inner join customer_inputs
        on restated_customers.customer_id = customer_inputs.customer_id
    left join previous_last_rows
        on restated_customers.customer_id = previous_last_rows.customer_id
    left join first_rewritten_months
        on restated_customers.customer_id = first_rewritten_months.customer_id
    left join lines_before_the_rewrite
        on restated_customers.customer_id = lines_before_the_rewrite.customer_id
    left join {{ this }} as month_before
        on
            first_rewritten_months.customer_id = month_before.customer_id
            and (first_rewritten_months.first_month - interval '1 month')::date = month_before.month
    group by restated_customers.customer_id

),

-- compared customers with no sales left: a row without a month tells the strategy to delete theirs
customers_gone as (

    select previous_last_rows.customer_id

    from previous_last_rows
    inner join compared_customers
        on previous_last_rows.customer_id = compared_customers.customer_id
    left join customer_inputs
        on previous_last_rows.customer_id = customer_inputs.customer_id
    where customer_inputs.customer_id is null

),

-- the months a new month of data adds to everyone else, nothing ordered in them
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
    inner join months
        on
            previous_last_rows.month < months.month
            and data_end.last_month >= months.month
    where
        not exists (
            select from restated_customers
            where restated_customers.customer_id = previous_last_rows.customer_id
        )
        and not exists (
            select from customers_gone
            where customers_gone.customer_id = previous_last_rows.customer_id
        )

),

-- a row without a month tells the strategy to delete all the customer's rows: for a customer
-- gone, and for one whose whole history is restated
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

    from (
        select customers_gone.customer_id from customers_gone
        union all
        select restatement_starts.customer_id from restatement_starts
        where restatement_starts.restated_from is null
    ) as replaced_whole

),

{% endif %}

restated_sales as (

    select sales.*

    from sales
    {% if is_incremental() -%}
    -- an array, not a join: so the planner reads their lines by index instead of sorting all lines
    where sales.customer_id = any(array(select restated_customers.customer_id from restated_customers))
    {%- endif %}

),

customer_month_sales as (

    select
        customer_id,
        date_trunc('month', order_date)::date as month,
        count(distinct order_id) as orders,
        count(*) as order_lines,
        sum(sales_amount) as revenue,
        sum(net_sales_amount) as net_revenue,
        max(loaded_at) as loaded_at

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
        customer_month_sales.loaded_at,
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
        max(filled.loaded_at) over cumulative as sales_loaded_at,
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

    select restated.* from restated
    {% if is_incremental() -%}
    inner join restatement_starts
        on restated.customer_id = restatement_starts.customer_id
    where restatement_starts.restated_from is null or restatement_starts.restated_from <= restated.month
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
