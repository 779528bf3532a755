with

customer_snapshots as (

    select * from {{ ref('snap_pacbook__customers') }}

),

versions as (

    {{ scd2_versions('customer_snapshots', 'customer_id') }}

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
        dbt_valid_from as snapshot_valid_from

    from versions

)

select * from final
