with

source as (

    select * from {{ source('publisher_files', 'publisher_book_costs') }}

),

renamed as (

    select
        file_name,
        line_number,
        file_version,
        publisher as publisher_slug,
        file_date,
        isbn13,
        unit_cost,
        currency,
        valid_from,
        run_id as loaded_by_run_id,
        loaded_at

    from source

)

select * from renamed
