{#- the measures of a group of lines, at every grain -#}
{%- set line_measures -%}
count(*) as books_sold,
        sum(revenue) as revenue,
        sum(estimated_cost_of_goods) as estimated_cost_of_goods,
        count(*) filter (where is_cost_from_publisher_file) as books_sold_with_file_cost,
        sum(shipping_cost) as shipping_cost
{%- endset -%}
{#- the grains an order belongs to whole: (grain, member id, member name) -#}
{%- set order_grains = [
    ('customer_segment', 'rfm_segment', 'rfm_segment'),
    ('shipping_method', 'method_id', 'method_name'),
    ('country', 'country_group_id', 'country_name'),
] -%}

with

sales as (

    select * from {{ ref('fct_sales') }}

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

segments as (

    select * from {{ ref('customer_segments') }}

),

cost_rates as (

    select * from {{ ref('publisher_cost_rates') }}

),

book_costs as (

    select * from {{ ref('int_book_costs_dated') }}

),

-- a cost rate applies from its valid_from to the next one of the same publisher (or of the
-- default, publisher_id null); as ranges they join like any dimension, where a per-line lateral
-- lookup cost 2 s at scale 100
cost_rate_periods as (

    select
        publisher_id,
        cost_rate,
        valid_from,
        coalesce(
            lead(valid_from) over (partition by publisher_id order by valid_from),
            '9999-12-31'::date
        ) as valid_to

    from cost_rates

),

-- only realised sales: lines of orders that count as net revenue (latest status not
-- Cancelled / Returned); a cancelled order is assumed to carry neither cost nor shipping
net_lines as (

    select * from sales
    where is_net_revenue

),

-- cost of goods of a line (one copy) = the publisher's unit cost from a price list valid at the
-- order date, rounded to the cent; without one, the assumption: price x the cost rate valid at
-- the order date (the publisher's own rate when the seed has one, else the default rate)
line_costs as (

    select
        net_lines.order_id,
        net_lines.book_id,
        books.title,
        books.publisher_id,
        books.publisher_name,
        segments.rfm_segment,
        shipping_methods.method_id,
        shipping_methods.method_name,
        geographies.country_group_id,
        geographies.country_name,
        net_lines.sales_amount as revenue,
        coalesce(
            round(book_costs.unit_cost, 2),
            round(net_lines.sales_amount * coalesce(own_rate.cost_rate, default_rate.cost_rate), 2)
        ) as estimated_cost_of_goods,
        coalesce(book_costs.unit_cost is not null, false) as is_cost_from_publisher_file,
        net_lines.shipping_cost_allocated as shipping_cost

    from net_lines
    left join books
        on net_lines.book_key = books.book_key
    left join shipping_methods
        on net_lines.shipping_method_key = shipping_methods.shipping_method_key
    left join geographies
        on net_lines.geography_key = geographies.geography_key
    left join segments
        on net_lines.customer_id = segments.customer_id
    left join book_costs
        on
            books.isbn13 = book_costs.isbn13
            and net_lines.order_date >= book_costs.valid_from
            and net_lines.order_date < book_costs.valid_to
    left join cost_rate_periods as own_rate
        on
            books.publisher_id = own_rate.publisher_id
            and net_lines.order_date >= own_rate.valid_from
            and net_lines.order_date < own_rate.valid_to
    left join cost_rate_periods as default_rate
        on
            default_rate.publisher_id is null
            and net_lines.order_date >= default_rate.valid_from
            and net_lines.order_date < default_rate.valid_to

),

-- a member counts an order once. Books and publishers vary within an order: counted distinct over
-- their lines. Segment, shipping method and country are the order's own: summed per order first,
-- then counted. Five grains stacked and sorted together for count(distinct) took 7 s at scale 100.
book_totals as (

    select
        'book' as grain,
        book_id::text as member_id,
        max(title) as member,
        count(distinct order_id) as orders,
        {{ line_measures }}

    from line_costs
    group by book_id

),

publisher_totals as (

    select
        'publisher' as grain,
        publisher_id::text as member_id,
        max(publisher_name) as member,
        count(distinct order_id) as orders,
        {{ line_measures }}

    from line_costs
    group by publisher_id

),

order_totals as (

    select
        order_id,
        rfm_segment,
        method_id,
        country_group_id,
        max(method_name) as method_name,
        max(country_name) as country_name,
        {{ line_measures }}

    from line_costs
    group by order_id, rfm_segment, method_id, country_group_id

),

order_member_totals as (
    {% for grain, member_id, member_name in order_grains %}
        select
            '{{ grain }}' as grain,
            {{ member_id }}::text as member_id,
            max({{ member_name }}) as member,
            count(*) as orders,
            sum(books_sold) as books_sold,
            sum(revenue) as revenue,
            sum(estimated_cost_of_goods) as estimated_cost_of_goods,
            sum(books_sold_with_file_cost) as books_sold_with_file_cost,
            sum(shipping_cost) as shipping_cost

        from order_totals
        group by {{ member_id }}
        {% if not loop.last %}
            union all
        {% endif %}
    {%- endfor %}
),

totals as (

    select * from book_totals
    union all
    select * from publisher_totals
    union all
    select * from order_member_totals

),

final as (

    select
        grain,
        member_id,
        member,
        orders,
        books_sold,
        revenue,
        estimated_cost_of_goods,
        books_sold_with_file_cost,
        case
            when books_sold_with_file_cost = books_sold then 'publisher_file'
            when books_sold_with_file_cost = 0 then 'assumption'
            else 'mixed'
        end as cost_source,
        shipping_cost,
        revenue - estimated_cost_of_goods as gross_margin,
        revenue - estimated_cost_of_goods - shipping_cost as margin,
        round((revenue - estimated_cost_of_goods - shipping_cost) / nullif(revenue, 0), 4) as margin_pct

    from totals

)

select * from final
