with

source as (

    select * from {{ source('pacbook', 'order_line') }}

),

renamed as (

    select
        line_id,
        order_id,
        book_id,
        price

    from source

)

select * from renamed
