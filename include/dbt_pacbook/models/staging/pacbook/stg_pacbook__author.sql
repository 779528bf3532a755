with

source as (

    select * from {{ source('pacbook', 'author') }}

),

renamed as (

    select
        author_id,
        author_name

    from source

)

select * from renamed
