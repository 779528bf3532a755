{# JIT off: the incremental filter makes the planner guess billions of rows where there are
   hundreds, and JIT compilation then cost 3 s of a 4 s build (bench/README.md). Analyze a
   table the build created: the marts read it at once, and planned without statistics a mart
   took over 11 minutes at scale 100 instead of 9 s (bench/notes_scale.md). Indexed on customer_id:
   fct_customer_monthly reads the lines of a night's customers by it. #}
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
        indexes=[
            {'columns': ['order_id']},
            {'columns': ['loaded_at']}, {'columns': ['built_at']},
            {'columns': ['customer_id']},
        ],
    )
}}

-- depends_on: {{ ref('stg_pacbook__order_history') }} (read by orders_loaded_since_last_build)
-- depends_on: {{ ref('dim_date') }} (date_key is computed, not joined: so the Cosmos task of this model
-- runs the date_key relationships test, which dbt's buildable selection otherwise gives to no task)

with

order_lines as (

    select * from {{ ref('stg_pacbook__order_line') }}
    {% if is_incremental() -%}
        where order_id in ({{ orders_loaded_since_last_build(destination_moved=true) }})
    {%- endif %}

),

orders as (

    select * from {{ ref('stg_pacbook__cust_order') }}
    {% if is_incremental() -%}
        where order_id in ({{ orders_loaded_since_last_build(destination_moved=true) }})
    {%- endif %}

),

addresses as (

    select * from {{ ref('stg_pacbook__address') }}

),

order_statuses as (

    select * from {{ ref('int_orders_latest_status') }}

),

customers as (

    select * from {{ ref('dim_customer') }}

),

books as (

    select * from {{ ref('dim_book') }}

),

shipping_methods as (

    select * from {{ ref('dim_shipping_method') }}

),

geographies as (

    select * from {{ ref('dim_geography') }}

),

status_members as (

    select * from {{ ref('dim_order_status') }}

),

lines_ranked as (

    select
        order_lines.*,
        row_number() over (partition by order_lines.order_id order by order_lines.line_id) as line_rank,
        count(*) over (partition by order_lines.order_id) as order_line_count

    from order_lines

),

-- the order header with every dimension resolved; customer and shipping method point in time
-- (the version valid when the order was placed: valid_from <= order_date < valid_to)
orders_resolved as (

    select
        orders.order_id,
        orders.order_date,
        orders.loaded_at as order_loaded_at,
        order_statuses.status_loaded_at,
        orders.customer_id,
        customers.customer_key,
        orders.shipping_method_id,
        shipping_methods.shipping_method_key,
        shipping_methods.cost as order_shipping_cost,
        orders.destination_address_id,
        geographies.geography_key,
        order_statuses.latest_order_status,
        order_statuses.is_net_revenue,
        status_members.order_status_key

    from orders
    left join order_statuses
        on orders.order_id = order_statuses.order_id
    left join status_members
        on coalesce(order_statuses.latest_order_status, 'No status history') = status_members.status_value
    left join customers
        on
            orders.customer_id = customers.customer_id
            and orders.order_date >= customers.valid_from
            and orders.order_date < customers.valid_to
    left join shipping_methods
        on
            orders.shipping_method_id = shipping_methods.method_id
            and orders.order_date >= shipping_methods.valid_from
            and orders.order_date < shipping_methods.valid_to
    left join addresses
        on orders.destination_address_id = addresses.address_id
    left join geographies
        on
            addresses.city = geographies.city
            and addresses.country_id = geographies.country_id

),

-- the order's shipping cost split equally over its lines in whole cents; the cents that do
-- not divide evenly all go to the line with the lowest line_id, so the lines sum exactly to
-- the order's cost
shipping_allocated as (

    select
        lines_ranked.line_id,
        floor(round(orders_resolved.order_shipping_cost * 100) / lines_ranked.order_line_count)
        + case
            when lines_ranked.line_rank = 1
                then
                    round(orders_resolved.order_shipping_cost * 100)
                    - floor(round(orders_resolved.order_shipping_cost * 100) / lines_ranked.order_line_count)
                    * lines_ranked.order_line_count
            else 0
        end as allocated_cents

    from lines_ranked
    inner join orders_resolved
        on lines_ranked.order_id = orders_resolved.order_id

),

final as (

    select
        lines_ranked.order_id,
        lines_ranked.line_id,
        lines_ranked.book_id,
        books.book_key,
        orders_resolved.customer_id,
        orders_resolved.customer_key,
        to_char(orders_resolved.order_date, 'YYYYMMDD')::integer as date_key,
        orders_resolved.order_date,
        orders_resolved.shipping_method_id,
        orders_resolved.shipping_method_key,
        orders_resolved.destination_address_id,
        orders_resolved.geography_key,
        orders_resolved.order_status_key,
        lines_ranked.price as sales_amount,
        case when orders_resolved.is_net_revenue then lines_ranked.price else 0.00 end as net_sales_amount,
        (shipping_allocated.allocated_cents / 100.0)::numeric(12, 2) as shipping_cost_allocated,
        orders_resolved.order_shipping_cost,
        lines_ranked.order_line_count::integer as order_line_count,
        orders_resolved.latest_order_status,
        orders_resolved.is_net_revenue,
        -- the latest arrival among the rows the order's facts were built from (incremental builds)
        greatest(
            orders_resolved.order_loaded_at,
            max(lines_ranked.loaded_at) over (partition by lines_ranked.order_id),
            orders_resolved.status_loaded_at
        ) as loaded_at,
        -- the build's transaction time: the data tests check recent builds' rows
        -- (macros/rows_since_the_last_passed_build.sql)
        now() as built_at

    from lines_ranked
    inner join orders_resolved
        on lines_ranked.order_id = orders_resolved.order_id
    left join shipping_allocated
        on lines_ranked.line_id = shipping_allocated.line_id
    left join books
        on lines_ranked.book_id = books.book_id

)

select * from final
