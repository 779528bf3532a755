with

source as (

    select * from {{ source('pacbook', 'order_status') }}

),

renamed as (

    select
        status_id as order_status_id,
        status_value as order_status

    from source

)

select * from renamed
