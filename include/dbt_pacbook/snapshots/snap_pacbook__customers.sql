{#
    A snapshot block (not YAML) because the rows are transformed before they are stored: personal
    columns are kept only as keyed hashes (change detection) and pgcrypto ciphertexts. Names, email
    and street come straight from staging; the current address from int_customers_current_address.
#}
{% snapshot snap_pacbook__customers %}

    {{
        config(
            schema='dwh',
            unique_key='customer_id',
            strategy='check',
            check_cols=['first_name_hash', 'last_name_hash', 'email_hash', 'address_id', 'city', 'country_name'],
            pre_hook=require_pii_key(),
        )
    }}

    with

    customers as (

        select * from {{ ref('stg_pacbook__customer') }}

    ),

    current_addresses as (

        select * from {{ ref('int_customers_current_address') }}

    ),

    addresses as (

        select * from {{ ref('stg_pacbook__address') }}

    ),

    final as (

        select
            customers.customer_id,
            -- personal columns: a keyed hash for change detection, the value itself encrypted
            {{ pii_hash('customers.first_name') }} as first_name_hash,
            {{ pii_hash('customers.last_name') }} as last_name_hash,
            {{ pii_hash('customers.email') }} as email_hash,
            {{ pii_encrypt('customers.first_name') }} as first_name_encrypted,
            {{ pii_encrypt('customers.last_name') }} as last_name_encrypted,
            {{ pii_encrypt('customers.email') }} as email_encrypted,
            current_addresses.address_id,
            {{ pii_encrypt('addresses.street_number') }} as street_number_encrypted,
            {{ pii_encrypt('addresses.street_name') }} as street_name_encrypted,
            current_addresses.city,
            current_addresses.country_id,
            current_addresses.country_name,
            current_addresses.address_status,
            current_addresses.current_address_rule

        from customers
        left join current_addresses
            on customers.customer_id = current_addresses.customer_id
        left join addresses
            on current_addresses.address_id = addresses.address_id

    )

    select * from final

{% endsnapshot %}
