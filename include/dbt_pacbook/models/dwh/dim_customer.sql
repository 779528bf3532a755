with

customer_snapshots as (

    select * from {{ ref('snap_pacbook__customers') }}

),

versions as (

    select
        customer_id,
        first_name,
        last_name,
        email,
        address_id,
        city,
        country_name,
        dbt_valid_from as snapshot_valid_from,
        dbt_valid_to as snapshot_valid_to,
        row_number() over (
            partition by customer_id
            order by dbt_valid_from
        ) as version_number

    from customer_snapshots
    -- a version closed at the instant it opened (a re-run stamped with the same snapshot_at
    -- after a change) is valid for no time at all: drop it
    where dbt_valid_to is null or dbt_valid_to > dbt_valid_from

),

validity as (

    select
        *,
        -- the first version is stretched back to 1900-01-01 so that orders placed before the
        -- first snapshot ran still find the customer's (earliest known) attributes
        case
            when version_number = 1 then '1900-01-01'::timestamp
            else snapshot_valid_from
        end as valid_from,
        coalesce(snapshot_valid_to, '9999-12-31'::timestamp) as valid_to,
        snapshot_valid_to is null as is_current

    from versions

),

final as (

    select
        {{ surrogate_key(['customer_id', 'valid_from']) }} as customer_key,
        customer_id,
        first_name,
        last_name,
        concat_ws(' ', first_name, last_name) as full_name,
        email,
        address_id,
        city,
        country_name,
        valid_from,
        valid_to,
        is_current,
        version_number,
        snapshot_valid_from

    from validity

)

select * from final
