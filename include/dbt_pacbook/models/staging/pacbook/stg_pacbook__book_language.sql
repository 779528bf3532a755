with

source as (

    select * from {{ source('pacbook', 'book_language') }}

),

renamed as (

    select
        language_id,
        language_code,
        language_name

    from source

)

select * from renamed
