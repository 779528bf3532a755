with

source as (

    select * from {{ source('pacbook', 'order_history') }}

),

renamed as (

    select
        history_id,
        order_id,
        status_id as order_status_id,
        status_date

    from source

)

select * from renamed
