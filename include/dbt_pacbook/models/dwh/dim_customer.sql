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
        -- personal data stays encrypted (pgcrypto): pii_reader reads it with dwh.decrypt_pii
        first_name_encrypted,
        last_name_encrypted,
        email_encrypted,
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
