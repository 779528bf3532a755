with

shipping_method_snapshots as (

    select * from {{ ref('snap_pacbook__shipping_methods') }}

),

versions as (

    select
        shipping_method_id as method_id,
        shipping_method_name as method_name,
        -- `cost` is the dimension's published column name, although a sql keyword
        shipping_cost as cost,  -- noqa: RF04
        dbt_valid_from as snapshot_valid_from,
        dbt_valid_to as snapshot_valid_to,
        row_number() over (
            partition by shipping_method_id
            order by dbt_valid_from
        ) as version_number

    from shipping_method_snapshots
    -- a version closed at the instant it opened is valid for no time at all: drop it
    where dbt_valid_to is null or dbt_valid_to > dbt_valid_from

),

validity as (

    select
        *,
        -- same convention as dim_customer: the first version is stretched back to 1900-01-01
        -- so that orders placed before the first snapshot still find a version
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
        {{ surrogate_key(['method_id', 'valid_from']) }} as shipping_method_key,
        method_id,
        method_name,
        cost,  -- noqa: RF04
        valid_from,
        valid_to,
        is_current,
        version_number,
        snapshot_valid_from

    from validity

)

select * from final
