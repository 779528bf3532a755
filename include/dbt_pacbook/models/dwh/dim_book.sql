with

books as (

    select * from {{ ref('stg_pacbook__book') }}

),

book_authors as (

    select * from {{ ref('int_books_authors_listed') }}

),

languages as (

    select * from {{ ref('stg_pacbook__book_language') }}

),

publishers as (

    select * from {{ ref('stg_pacbook__publisher') }}

),

final as (

    select
        {{ surrogate_key(['books.book_id']) }} as book_key,
        books.book_id,
        books.title,
        books.title_raw,
        books.isbn13,
        books.isbn13_raw,
        books.language_id,
        languages.language_code,
        languages.language_name,
        books.publisher_id,
        publishers.publisher_name,
        books.num_pages,
        books.publication_date,
        extract(year from books.publication_date)::integer as publication_year,
        book_authors.author_names,
        book_authors.primary_author_name,
        book_authors.author_count

    from books
    left join book_authors
        on books.book_id = book_authors.book_id
    left join languages
        on books.language_id = languages.language_id
    left join publishers
        on books.publisher_id = publishers.publisher_id

)

select * from final
