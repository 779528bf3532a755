with

sales as (

    select * from {{ ref('fct_sales') }}

),

books as (

    select * from {{ ref('dim_book') }}

),

book_months as (

    select
        book_id,
        date_trunc('month', order_date)::date as month,
        count(*) as quantity,
        sum(sales_amount) as gross_revenue

    from sales
    group by 1, 2

),

final as (

    select
        book_months.book_id,
        books.title,
        book_months.month,
        book_months.quantity,
        book_months.gross_revenue,
        sum(book_months.quantity) over (
            partition by book_months.book_id
            order by book_months.month
            rows between unbounded preceding and current row
        ) as cumulative_quantity

    from book_months
    left join books
        on book_months.book_id = books.book_id

)

select * from final
