with

source as (

    select * from {{ source('pacbook', 'order_line') }}

),

renamed as (

    select
        line_id,
        order_id,
        book_id,
        price,
        _pacbook_loaded_at as loaded_at

    from source

)

select * from renamed
