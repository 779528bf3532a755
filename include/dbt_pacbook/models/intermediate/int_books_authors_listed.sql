with

books as (

    select * from {{ ref('stg_pacbook__book') }}

),

book_authors as (

    select * from {{ ref('stg_pacbook__book_author') }}

),

authors as (

    select * from {{ ref('stg_pacbook__author') }}

),

book_authors_ranked as (

    select
        book_authors.book_id,
        book_authors.author_id,
        authors.author_name,
        row_number() over (
            partition by book_authors.book_id
            order by book_authors.author_id
        ) as author_rank

    from book_authors
    inner join authors
        on book_authors.author_id = authors.author_id

),

authors_listed as (

    select
        book_id,
        string_agg(author_name, ', ' order by author_id) as author_names,
        max(case when author_rank = 1 then author_id end) as primary_author_id,
        max(case when author_rank = 1 then author_name end) as primary_author_name,
        count(*) as author_count

    from book_authors_ranked
    group by book_id

),

final as (

    select
        books.book_id,
        authors_listed.author_names,
        authors_listed.primary_author_id,
        authors_listed.primary_author_name,
        coalesce(authors_listed.author_count, 0) as author_count

    from books
    left join authors_listed
        on books.book_id = authors_listed.book_id

)

select * from final
