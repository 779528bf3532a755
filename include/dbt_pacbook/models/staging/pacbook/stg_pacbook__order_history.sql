with

source as (

    select * from {{ source('pacbook', 'order_history') }}

),

renamed as (

    select
        history_id,
        order_id,
        status_id as order_status_id,
        status_date,
        _pacbook_loaded_at as loaded_at

    from source

)

select * from renamed
