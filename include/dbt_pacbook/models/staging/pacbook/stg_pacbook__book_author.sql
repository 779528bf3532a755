with

source as (

    select * from {{ source('pacbook', 'book_author') }}

),

renamed as (

    select
        book_id,
        author_id

    from source

)

select * from renamed
