-- dim_date must hold every order day and at least 12 months past the latest order (the
-- forecast horizon), without missing days.
with

calendar as (

    select
        min(date) as first_day,
        max(date) as last_day,
        count(*) as calendar_days

    from {{ ref('dim_date') }}

),

orders as (

    select
        min(order_date)::date as first_order_day,
        max(order_date)::date as last_order_day

    from {{ ref('stg_pacbook__cust_order') }}

)

select
    calendar.first_day,
    calendar.last_day,
    calendar.calendar_days,
    orders.first_order_day,
    orders.last_order_day

from calendar
cross join orders
where
    calendar.first_day > orders.first_order_day
    or calendar.last_day < (orders.last_order_day + interval '12 months')::date
    or calendar.calendar_days != calendar.last_day - calendar.first_day + 1
