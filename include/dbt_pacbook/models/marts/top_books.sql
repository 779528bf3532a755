with

sales as (

    select * from {{ ref('fct_sales') }}

),

books as (

    select * from {{ ref('dim_book') }}

),

book_periods as (

    select
        extract(year from order_date)::integer::text as period,
        book_id,
        count(*) as quantity,
        sum(sales_amount) as gross_revenue

    from sales
    group by 1, 2

    union all

    select
        'all' as period,
        book_id,
        count(*) as quantity,
        sum(sales_amount) as gross_revenue

    from sales
    group by 1, 2

),

-- ranks are unique within a period: ties on the measure are broken by the other measure,
-- then by book_id, so a rank is never shared and "top 50" holds exactly 50 books
ranked as (

    select
        *,
        row_number() over (
            partition by period
            order by gross_revenue desc, quantity desc, book_id
        ) as revenue_rank,
        row_number() over (
            partition by period
            order by quantity desc, gross_revenue desc, book_id
        ) as quantity_rank

    from book_periods

),

final as (

    select
        ranked.period,
        ranked.book_id,
        books.book_key,
        books.title,
        books.primary_author_name,
        ranked.quantity,
        ranked.gross_revenue,
        ranked.revenue_rank,
        ranked.quantity_rank

    from ranked
    left join books
        on ranked.book_id = books.book_id
    where ranked.revenue_rank <= 50 or ranked.quantity_rank <= 50

)

select * from final
