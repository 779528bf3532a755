{#
    Fails for every version of an SCD type 2 dimension that breaks the tiling of time per
    unique_key: the first version must start on 1900-01-01, each next one where the previous one
    ends, and exactly the last one is current (valid_to 9999-12-31). (See macro scd2_versions.)
#}
{% test scd2_versions_are_contiguous(
    model, unique_key, valid_from='valid_from', valid_to='valid_to', is_current='is_current'
) %}

with

versions as (

    select
        {{ unique_key }} as unique_key,
        {{ valid_from }} as valid_from,
        {{ valid_to }} as valid_to,
        {{ is_current }} as is_current,
        lead({{ valid_from }}) over (partition by {{ unique_key }} order by {{ valid_from }}) as next_valid_from,
        row_number() over (partition by {{ unique_key }} order by {{ valid_from }}) as version_rank

    from {{ model }}

)

select *

from versions
where
    (version_rank = 1 and valid_from != '1900-01-01'::timestamp)
    or (next_valid_from is not null and next_valid_from != valid_to)
    or (next_valid_from is null and (valid_to != '9999-12-31'::timestamp or not is_current))
    or (next_valid_from is not null and is_current)

{% endtest %}
