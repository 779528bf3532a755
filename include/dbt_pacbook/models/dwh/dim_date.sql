with

orders as (

    select * from {{ ref('stg_pacbook__cust_order') }}

),

bounds as (

    select
        '2020-01-01'::date as start_date,
        -- one year past the latest order, and never before the end of 2026
        greatest(
            (max(order_date) + interval '1 year')::date,
            '2026-12-31'::date
        ) as end_date

    from orders

),

date_spine as (

    select series.date_day::date as date_day

    from bounds
    cross join lateral generate_series(
        bounds.start_date, bounds.end_date, interval '1 day'
    ) as series (date_day)

),

final as (

    select
        to_char(date_day, 'YYYYMMDD')::integer as date_key,
        date_day as date,
        extract(year from date_day)::integer as year,
        extract(quarter from date_day)::integer as quarter,
        extract(month from date_day)::integer as month,
        to_char(date_day, 'FMMonth') as month_name,
        to_char(date_day, 'YYYY-MM') as month_label,
        date_trunc('month', date_day)::date as first_of_month,
        (date_trunc('month', date_day) + interval '1 month' - interval '1 day')::date as last_of_month,
        date_trunc('quarter', date_day)::date as first_of_quarter,
        -- iso: 1 = monday ... 7 = sunday
        extract(isodow from date_day)::integer as day_of_week,
        to_char(date_day, 'FMDay') as day_name,
        extract(week from date_day)::integer as iso_week,
        extract(isoyear from date_day)::integer as iso_year,
        extract(isodow from date_day) in (6, 7) as is_weekend,
        date_day = (date_trunc('month', date_day) + interval '1 month' - interval '1 day')::date
            as is_month_end,
        date_day = (date_trunc('quarter', date_day) + interval '3 months' - interval '1 day')::date
            as is_quarter_end,
        extract(month from date_day) = 12 and extract(day from date_day) = 31 as is_year_end

    from date_spine

)

select * from final
