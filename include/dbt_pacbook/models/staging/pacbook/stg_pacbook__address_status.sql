with

source as (

    select * from {{ source('pacbook', 'address_status') }}

),

renamed as (

    select
        status_id as address_status_id,
        address_status,
        address_status = 'Active' as is_active

    from source

)

select * from renamed
