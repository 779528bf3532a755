with

source as (

    select * from {{ source('pacbook', 'country') }}

),

renamed as (

    select
        country_id,
        country_name

    from source

)

select * from renamed
