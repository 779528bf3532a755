with

source as (

    select * from {{ source('pacbook', 'shipping_method') }}

),

renamed as (

    select
        method_id as shipping_method_id,
        method_name as shipping_method_name,
        cost as shipping_cost

    from source

)

select * from renamed
