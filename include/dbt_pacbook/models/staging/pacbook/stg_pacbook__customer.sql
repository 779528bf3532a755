with

source as (

    select * from {{ source('pacbook', 'customer') }}

),

renamed as (

    select
        customer_id,
        first_name,
        last_name,
        email

    from source

)

select * from renamed
