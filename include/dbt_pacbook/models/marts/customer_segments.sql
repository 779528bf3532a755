with

sales as (

    select * from {{ ref('fct_sales') }}

),

customers as (

    select * from {{ ref('dim_customer') }}

),

-- "today" for the scoring is the last order in the data, not the wall clock, so the result
-- only changes when the data does
as_of as (

    select max(order_date) as as_of_at from sales

),

customer_totals as (

    select
        sales.customer_id,
        count(distinct sales.order_id) as orders,
        min(sales.order_date) as first_order_at,
        max(sales.order_date) as last_order_at,
        sum(sales.sales_amount) as total_sales,
        sum(sales.net_sales_amount) as net_sales,
        coalesce(
            sum(sales.sales_amount) filter (where sales.order_date > as_of.as_of_at - interval '12 months'),
            0.00
        ) as sales_last_12_months

    from sales
    cross join as_of
    group by sales.customer_id

),

scored as (

    select
        customer_totals.*,
        round((extract(epoch from as_of.as_of_at - customer_totals.last_order_at) / 86400)::numeric, 2)
            as recency_days,
        -- quintiles over all ordering customers, 5 = best; ties broken deterministically
        ntile(5) over (
            order by customer_totals.last_order_at, customer_totals.customer_id
        ) as recency_score,
        ntile(5) over (
            order by customer_totals.orders, customer_totals.total_sales, customer_totals.customer_id
        ) as frequency_score,
        ntile(5) over (
            order by customer_totals.total_sales, customer_totals.orders, customer_totals.customer_id
        ) as monetary_score,
        row_number() over (
            order by customer_totals.total_sales desc, customer_totals.customer_id
        )::numeric / count(*) over () as spend_rank_share

    from customer_totals
    cross join as_of

),

segmented as (

    select
        *,
        -- first matching rule wins (documented in _marts__models.yml)
        case
            when recency_score >= 4 and frequency_score >= 4 and monetary_score >= 4 then 'Champions'
            when recency_score >= 3 and frequency_score >= 4 then 'Loyal'
            when recency_score >= 4 and frequency_score <= 2 then 'New'
            when recency_score >= 3 then 'Potential Loyalist'
            when recency_score = 1 and frequency_score = 5 and monetary_score = 5 then 'Cannot Lose Them'
            when frequency_score >= 3 then 'At Risk'
            else 'Hibernating'
        end as rfm_segment,
        case
            when spend_rank_share <= 0.2 then 'Gold'
            when spend_rank_share <= 0.5 then 'Silver'
            else 'Bronze'
        end as value_tier

    from scored

),

final as (

    select
        customers.customer_key,
        segmented.customer_id,
        customers.country_name,
        segmented.orders,
        segmented.first_order_at,
        segmented.last_order_at,
        segmented.recency_days,
        segmented.recency_score,
        segmented.frequency_score,
        segmented.monetary_score,
        concat(segmented.recency_score, segmented.frequency_score, segmented.monetary_score) as rfm_score,
        segmented.rfm_segment,
        segmented.value_tier,
        segmented.total_sales,
        segmented.net_sales,
        segmented.sales_last_12_months

    from segmented
    -- the customer as they are now (current version): pseudonymous key, no names or emails
    left join customers
        on
            segmented.customer_id = customers.customer_id
            and customers.is_current

)

select * from final
