with

addresses as (

    select * from {{ ref('stg_pacbook__address') }}

),

countries as (

    select * from {{ ref('stg_pacbook__country') }}

),

-- one member per city x country_id that occurs on an address; the country name is the
-- reporting label, so the two "Singapore" ids are kept apart here (country_id) and merged
-- where marts report by country_name (country_group_id names the merged country)
cities as (

    select
        addresses.city,
        addresses.country_id,
        count(*) as address_count

    from addresses
    group by addresses.city, addresses.country_id

),

country_groups as (

    select
        country_id,
        country_name,
        min(country_id) over (partition by country_name) as country_group_id

    from countries

),

final as (

    select
        {{ surrogate_key(['cities.city', 'cities.country_id']) }} as geography_key,
        cities.city,
        cities.country_id,
        country_groups.country_name,
        country_groups.country_group_id,
        cities.address_count

    from cities
    left join country_groups
        on cities.country_id = country_groups.country_id

)

select * from final
