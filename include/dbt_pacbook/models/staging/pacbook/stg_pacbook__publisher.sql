with

source as (

    select * from {{ source('pacbook', 'publisher') }}

),

renamed as (

    select
        publisher_id,
        publisher_name

    from source

)

select * from renamed
