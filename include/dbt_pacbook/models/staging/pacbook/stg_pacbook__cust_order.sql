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
        order_date,
        _pacbook_loaded_at as loaded_at

    from source

)

select * from renamed
