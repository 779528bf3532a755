with

books as (

    select * from {{ ref('dim_book') }}

),

book_authors as (

    select * from {{ ref('stg_pacbook__book_author') }}

),

authors as (

    select * from {{ ref('stg_pacbook__author') }}

),

-- the source has no author order or role: position = author_id order, the first is primary
-- (the same rule as dim_book.primary_author_name); books without authors have no row here
final as (

    select
        books.book_key,
        books.book_id,
        book_authors.author_id,
        authors.author_name,
        row_number() over (
            partition by books.book_id
            order by book_authors.author_id
        )::integer as author_position,
        -- weighting factor: splits a book's measures evenly across its authors (sums to 1)
        (1.0 / count(*) over (partition by books.book_id))::numeric(10, 6) as allocation_weight,
        row_number() over (
            partition by books.book_id
            order by book_authors.author_id
        ) = 1 as is_primary_author

    from book_authors
    inner join books
        on book_authors.book_id = books.book_id
    inner join authors
        on book_authors.author_id = authors.author_id

)

select * from final
