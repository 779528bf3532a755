with

source as (

    select * from {{ source('pacbook', 'address') }}

),

renamed as (

    select
        address_id,
        street_number,
        street_name,
        city,
        country_id

    from source

)

select * from renamed
