with

sales as (

    select * from {{ ref('fct_sales') }}

),

books as (

    select * from {{ ref('dim_book') }}

),

language_totals as (

    select
        books.language_id,
        max(books.language_code) as language_code,
        max(books.language_name) as language_name,
        count(distinct sales.book_id) as titles_sold,
        count(distinct sales.order_id) as orders,
        count(*) as books_sold,
        sum(sales.sales_amount) as gross_revenue,
        sum(sales.net_sales_amount) as net_revenue

    from sales
    inner join books
        on sales.book_key = books.book_key
    group by books.language_id

),

final as (

    select
        *,
        round(gross_revenue / nullif(sum(gross_revenue) over (), 0), 4) as share_of_gross_revenue

    from language_totals

)

select * from final
