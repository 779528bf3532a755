with

shipping_method_snapshots as (

    select * from {{ ref('snap_pacbook__shipping_methods') }}

),

versions as (

    {{ scd2_versions('shipping_method_snapshots', 'shipping_method_id') }}

),

final as (

    select
        {{ surrogate_key(['shipping_method_id', 'valid_from']) }} as shipping_method_key,
        shipping_method_id as method_id,
        shipping_method_name as method_name,
        -- `cost` is the dimension's published column name, although a sql keyword
        shipping_cost as cost,  -- noqa: RF04
        valid_from,
        valid_to,
        is_current,
        version_number,
        dbt_valid_from as snapshot_valid_from

    from versions

)

select * from final
