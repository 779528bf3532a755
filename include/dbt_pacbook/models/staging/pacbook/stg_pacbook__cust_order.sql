with

source as (

    select * from {{ source('pacbook', 'cust_order') }}

),

renamed as (

    select
        order_id,
        customer_id,
        shipping_method_id,
        dest_address_id as destination_address_id,
        order_date

    from source

)

select * from renamed
