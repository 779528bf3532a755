{# JIT off: the incremental filter makes the planner guess billions of rows where there are
   hundreds, and JIT compilation then cost 3 s of a 4 s build (bench/README.md). Analyze after
   the build: the marts read this table at once, and planned without statistics a mart took
   over 11 minutes at scale 100 instead of 9 s (bench/notes_scale.md). #}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        contract={'enforced': true},
        pre_hook='set local jit = off',
        post_hook=[
            '{{ delete_orders_gone_from_staging() }}', '{{ analyze_if_never_analyzed() }}', '{{ analyze_built_at() }}',
        ],
        indexes=[{'columns': ['loaded_at']}, {'columns': ['built_at']}],
    )
}}

-- depends_on: {{ ref('stg_pacbook__order_line') }} (read by orders_loaded_since_last_build)
-- depends_on: {{ ref('dim_date') }} (date_key is computed, not joined: so the Cosmos task of this model
-- runs the date_key relationships test, which dbt's buildable selection otherwise gives to no task)

with

orders as (

    select * from {{ ref('stg_pacbook__cust_order') }}
    {% if is_incremental() -%}
        where order_id in ({{ orders_loaded_since_last_build(restated_in=ref('fct_sales')) }})
    {%- endif %}

),

order_history as (

    select * from {{ ref('stg_pacbook__order_history') }}
    {% if is_incremental() -%}
        where order_id in ({{ orders_loaded_since_last_build(restated_in=ref('fct_sales')) }})
    {%- endif %}

),

order_status as (

    select * from {{ ref('stg_pacbook__order_status') }}

),

latest_statuses as (

    select * from {{ ref('int_orders_latest_status') }}

),

order_lines as (

    select * from {{ ref('fct_sales') }}
    {% if is_incremental() -%}
        where order_id in ({{ orders_loaded_since_last_build(restated_in=ref('fct_sales')) }})
    {%- endif %}

),

-- first occurrence of every milestone, one row per order that has history
milestones as (

    select
        order_history.order_id,
        min(order_history.status_date) filter (where order_status.order_status = 'Order Received') as received_at,
        min(order_history.status_date) filter (where order_status.order_status = 'Pending Delivery') as pending_at,
        min(order_history.status_date) filter (
            where order_status.order_status = 'Delivery In Progress'
        ) as in_progress_at,
        min(order_history.status_date) filter (where order_status.order_status = 'Delivered') as delivered_at,
        min(order_history.status_date) filter (where order_status.order_status = 'Cancelled') as cancelled_at,
        min(order_history.status_date) filter (where order_status.order_status = 'Returned') as returned_at

    from order_history
    inner join order_status
        on order_history.order_status_id = order_status.order_status_id
    group by order_history.order_id

),

-- the order's dimension keys and measures, taken from the line fact so both facts agree
order_totals as (

    select
        order_id,
        min(customer_key) as customer_key,
        min(date_key) as date_key,
        min(shipping_method_key) as shipping_method_key,
        min(geography_key) as geography_key,
        min(order_status_key) as order_status_key,
        count(*) as order_line_count,
        sum(sales_amount) as order_amount,
        sum(shipping_cost_allocated) as shipping_cost,
        max(loaded_at) as lines_loaded_at

    from order_lines
    group by order_id

),

timeline as (

    select
        orders.order_id,
        orders.customer_id,
        orders.order_date,
        milestones.received_at,
        milestones.pending_at,
        milestones.in_progress_at,
        milestones.delivered_at,
        milestones.cancelled_at,
        milestones.returned_at,
        latest_statuses.latest_order_status,
        latest_statuses.status_event_count,
        latest_statuses.is_net_revenue,
        greatest(orders.loaded_at, latest_statuses.status_loaded_at) as rows_loaded_at

    from orders
    left join milestones
        on orders.order_id = milestones.order_id
    left join latest_statuses
        on orders.order_id = latest_statuses.order_id

),

-- every rule that a real fulfilment cannot break; one text per broken rule
checked as (

    select
        *,
        nullif(concat_ws(
            '; ',
            case
                when
                    received_at is null
                    and coalesce(pending_at, in_progress_at, delivered_at, cancelled_at, returned_at) is not null
                    then 'milestones without Order Received'
            end,
            case
                when
                    least(pending_at, in_progress_at, delivered_at, cancelled_at, returned_at) < received_at
                    then 'milestone before Order Received'
            end,
            case when received_at < order_date then 'Order Received before the order date' end,
            case
                when in_progress_at < pending_at or delivered_at < greatest(pending_at, in_progress_at)
                    then 'delivery steps out of order'
            end,
            case when returned_at < delivered_at then 'Returned before Delivered' end,
            case when returned_at is not null and delivered_at is null then 'Returned without Delivered' end,
            case when delivered_at > cancelled_at then 'Delivered after Cancelled' end
        ), '') as sequence_issue

    from timeline

),

final as (

    select
        checked.order_id,
        checked.customer_id,
        order_totals.customer_key,
        order_totals.date_key,
        order_totals.shipping_method_key,
        order_totals.geography_key,
        order_totals.order_status_key,
        checked.order_date,
        checked.received_at,
        checked.pending_at,
        checked.in_progress_at,
        checked.delivered_at,
        checked.cancelled_at,
        checked.returned_at,
        round((extract(epoch from checked.received_at - checked.order_date) / 86400)::numeric, 2)
            as days_order_to_received,
        round((extract(epoch from checked.pending_at - checked.received_at) / 86400)::numeric, 2)
            as days_received_to_pending,
        round((extract(epoch from checked.in_progress_at - checked.pending_at) / 86400)::numeric, 2)
            as days_pending_to_in_progress,
        round((extract(epoch from checked.delivered_at - checked.in_progress_at) / 86400)::numeric, 2)
            as days_in_progress_to_delivered,
        round((extract(epoch from checked.delivered_at - checked.received_at) / 86400)::numeric, 2)
            as days_received_to_delivered,
        round((extract(epoch from checked.cancelled_at - checked.received_at) / 86400)::numeric, 2)
            as days_received_to_cancelled,
        round((extract(epoch from checked.returned_at - checked.delivered_at) / 86400)::numeric, 2)
            as days_delivered_to_returned,
        checked.latest_order_status,
        coalesce(checked.status_event_count, 0) as status_event_count,
        checked.is_net_revenue,
        coalesce(order_totals.order_line_count, 0) as order_line_count,
        coalesce(order_totals.order_amount, 0.00) as order_amount,
        coalesce(order_totals.shipping_cost, 0.00) as shipping_cost,
        checked.sequence_issue is not null as has_impossible_sequence,
        checked.sequence_issue,
        -- the latest arrival among the rows the order was built from (incremental builds)
        greatest(checked.rows_loaded_at, order_totals.lines_loaded_at) as loaded_at,
        -- the build's transaction time: the data tests check recent builds' rows
        -- (macros/rows_since_the_last_passed_build.sql)
        now() as built_at

    from checked
    left join order_totals
        on checked.order_id = order_totals.order_id

)

select * from final
