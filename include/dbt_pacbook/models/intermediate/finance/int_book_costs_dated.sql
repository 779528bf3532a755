with

book_costs as (

    select * from {{ ref('stg_publisher_files__book_costs') }}

),

-- the same ISBN and start date can come from two files (a list re-sent under a later date, or two
-- publishers listing one ISBN): the newest file wins, then the later load, then the later line
ranked as (

    select
        *,
        row_number() over (
            partition by isbn13, valid_from
            order by file_date desc, loaded_at desc, file_name desc, line_number desc
        ) as rank_within_start_date

    from book_costs

),

dated as (

    select
        isbn13,
        valid_from,
        coalesce(
            lead(valid_from) over (partition by isbn13 order by valid_from),
            '9999-12-31'::date
        ) as valid_to,
        unit_cost,
        currency,
        file_name,
        file_version,
        line_number

    from ranked
    where rank_within_start_date = 1

),

final as (

    select
        {{ surrogate_key(['isbn13', 'valid_from']) }} as book_cost_key,
        isbn13,
        valid_from,
        valid_to,
        unit_cost,
        currency,
        file_name,
        file_version,
        line_number

    from dated

)

select * from final
