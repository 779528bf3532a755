-- Each shipping method's versions must tile time without gaps or overlaps: the first starts on
-- 1900-01-01, each next one starts where the previous ends, exactly one is current
-- (valid_to 9999-12-31).
with

versions as (

    select
        method_id,
        valid_from,
        valid_to,
        is_current,
        lead(valid_from) over (partition by method_id order by valid_from) as next_valid_from,
        row_number() over (partition by method_id order by valid_from) as version_rank

    from {{ ref('dim_shipping_method') }}

)

select *

from versions
where
    (version_rank = 1 and valid_from != '1900-01-01'::timestamp)
    or (next_valid_from is not null and next_valid_from != valid_to)
    or (next_valid_from is null and (valid_to != '9999-12-31'::timestamp or not is_current))
    or (next_valid_from is not null and is_current)
