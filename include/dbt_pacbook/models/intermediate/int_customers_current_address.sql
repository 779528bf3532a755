with

customers as (

    select * from {{ ref('stg_pacbook__customer') }}

),

customer_addresses as (

    select * from {{ ref('stg_pacbook__customer_address') }}

),

address_statuses as (

    select * from {{ ref('stg_pacbook__address_status') }}

),

addresses as (

    select * from {{ ref('stg_pacbook__address') }}

),

countries as (

    select * from {{ ref('stg_pacbook__country') }}

),

-- customer_address carries no dates and many customers hold several Active addresses, so
-- "current" is a written rule: the Active address with the highest address_id; a customer
-- without an Active address falls back to their highest address_id whatever its status
customer_addresses_ranked as (

    select
        customer_addresses.customer_id,
        customer_addresses.address_id,
        address_statuses.address_status,
        coalesce(address_statuses.is_active, false) as is_active,
        row_number() over (
            partition by customer_addresses.customer_id
            order by
                case when address_statuses.is_active then 0 else 1 end,
                customer_addresses.address_id desc
        ) as address_rank

    from customer_addresses
    left join address_statuses
        on customer_addresses.address_status_id = address_statuses.address_status_id

),

current_addresses as (

    select * from customer_addresses_ranked
    where address_rank = 1

),

final as (

    select
        customers.customer_id,
        current_addresses.address_id,
        addresses.city,
        addresses.country_id,
        countries.country_name,
        current_addresses.address_status,
        case
            when current_addresses.address_id is null then 'no_address'
            when current_addresses.is_active then 'highest_active_address_id'
            else 'highest_address_id_no_active'
        end as current_address_rule

    from customers
    left join current_addresses
        on customers.customer_id = current_addresses.customer_id
    left join addresses
        on current_addresses.address_id = addresses.address_id
    left join countries
        on addresses.country_id = countries.country_id

)

select * from final
