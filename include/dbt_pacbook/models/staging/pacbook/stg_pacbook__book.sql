with

source as (

    select * from {{ source('pacbook', 'book') }}

),

renamed as (

    select
        book_id,
        language_id,
        publisher_id,

        -- runs of whitespace (2,995 titles hold a double space) collapsed, ends trimmed;
        -- the untouched value is kept next to it
        regexp_replace(btrim(title), '\s+', ' ', 'g') as title,
        title as title_raw,

        -- the ISBN lost its leading zeros upstream (10- and 11-digit values): left-pad to 13
        lpad(btrim(isbn13), 13, '0') as isbn13,
        isbn13 as isbn13_raw,

        -- 0 pages means "unknown", not an empty book
        nullif(num_pages, 0) as num_pages,

        -- 1900-01-01 is a placeholder for an unknown publication date
        case
            when publication_date = '1900-01-01'::date then null
            else publication_date
        end as publication_date

    from source

)

select * from renamed
