with

source as (

    select * from {{ source('pacbook', 'customer_address') }}

),

renamed as (

    select
        customer_id,
        address_id,
        status_id as address_status_id

    from source

)

select * from renamed
