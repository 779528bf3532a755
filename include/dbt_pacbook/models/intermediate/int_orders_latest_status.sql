{# Incremental like the order facts it feeds: a night re-ranks the statuses of the orders whose
   rows arrived, not the whole history (as a view, each fact and each of its tests ranked all
   status events again: ~10 s apiece at scale 100, bench/notes_scale.md). #}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        pre_hook='set local jit = off',
        post_hook=['{{ delete_orders_gone_from_staging() }}', '{{ analyze_if_never_analyzed() }}'],
        indexes=[{'columns': ['order_id'], 'unique': true}, {'columns': ['loaded_at']}],
    )
}}

-- depends_on: {{ ref('stg_pacbook__order_line') }} (read by orders_loaded_since_last_build)

with

orders as (

    select * from {{ ref('stg_pacbook__cust_order') }}
    {% if is_incremental() -%}
        where order_id in ({{ orders_loaded_since_last_build() }})
    {%- endif %}

),

order_history as (

    select * from {{ ref('stg_pacbook__order_history') }}
    {% if is_incremental() -%}
        where order_id in ({{ orders_loaded_since_last_build() }})
    {%- endif %}

),

order_status as (

    select * from {{ ref('stg_pacbook__order_status') }}

),

history_ranked as (

    select
        order_history.order_id,
        order_history.history_id,
        order_history.status_date,
        order_history.loaded_at,
        order_status.order_status,
        row_number() over (
            partition by order_history.order_id
            order by order_history.status_date desc, order_history.history_id desc
        ) as status_rank

    from order_history
    inner join order_status
        on order_history.order_status_id = order_status.order_status_id

),

history_summary as (

    select
        order_id,
        count(*) as status_event_count,
        max(loaded_at) as status_loaded_at,
        bool_or(order_status = 'Cancelled') as has_cancelled_event,
        bool_or(order_status = 'Returned') as has_returned_event

    from history_ranked
    group by order_id

),

final as (

    select
        orders.order_id,
        latest.order_status as latest_order_status,
        latest.status_date as latest_status_date,
        latest.history_id as latest_history_id,
        coalesce(history_summary.status_event_count, 0) as status_event_count,
        history_summary.status_loaded_at,
        coalesce(history_summary.has_cancelled_event, false) as has_cancelled_event,
        coalesce(history_summary.has_returned_event, false) as has_returned_event,
        coalesce(latest.order_status not in ('Cancelled', 'Returned'), true) as is_net_revenue,
        greatest(orders.loaded_at, history_summary.status_loaded_at) as loaded_at

    from orders
    left join history_ranked as latest
        on
            orders.order_id = latest.order_id
            and latest.status_rank = 1
    left join history_summary
        on orders.order_id = history_summary.order_id

)

select * from final
