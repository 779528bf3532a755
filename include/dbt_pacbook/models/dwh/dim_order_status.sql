with

order_statuses as (

    select * from {{ ref('stg_pacbook__order_status') }}

),

known_statuses as (

    select
        order_status_id as status_id,
        order_status as status_value

    from order_statuses

),

-- explicit member for orders without any status history (5 in the real data), so that the
-- facts' order_status_key is never null
unknown_status as (

    select
        -1 as status_id,
        'No status history' as status_value

),

all_statuses as (

    select * from known_statuses
    union all
    select * from unknown_status

),

final as (

    select
        {{ surrogate_key(['status_id']) }} as order_status_key,
        status_id,
        status_value,
        status_value in ('Delivered', 'Cancelled', 'Returned') as is_terminal,
        -- same rule as int_orders_latest_status.is_net_revenue
        status_value not in ('Cancelled', 'Returned') as counts_as_net_revenue,
        case status_value
            when 'No status history' then 0
            when 'Order Received' then 1
            when 'Pending Delivery' then 2
            when 'Delivery In Progress' then 3
            when 'Delivered' then 4
            when 'Cancelled' then 5
            when 'Returned' then 6
        end as milestone_order

    from all_statuses

)

select * from final
