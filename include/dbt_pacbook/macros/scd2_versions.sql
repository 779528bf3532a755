{#
    scd2_versions(snapshots, unique_key)
    The versions of a dbt snapshot as an SCD type 2 dimension sees them: every snapshot column, plus
      version_number  1, 2, ... per unique_key in time order;
      valid_from      1900-01-01 for the first version (so that facts older than the first snapshot
                      still find the earliest known version), else the snapshot's dbt_valid_from;
      valid_to        the snapshot's dbt_valid_to, 9999-12-31 for the current version;
      is_current      true for the current version.
    Validity is the half-open interval [valid_from, valid_to). A version closed at the instant it
    opened (a re-run stamped with the same snapshot_at after a change) is valid for no time and is
    left out. `snapshots` is a relation or a CTE name; the test scd2_versions_are_contiguous checks
    the result.
#}
{% macro scd2_versions(snapshots, unique_key) -%}
    select
        *,
        row_number() over versions as version_number,
        case
            when row_number() over versions = 1 then '1900-01-01'::timestamp
            else dbt_valid_from
        end as valid_from,
        coalesce(dbt_valid_to, '9999-12-31'::timestamp) as valid_to,
        dbt_valid_to is null as is_current

    from {{ snapshots }}
    where dbt_valid_to is null or dbt_valid_to > dbt_valid_from
    window versions as (partition by {{ unique_key }} order by dbt_valid_from)
{%- endmacro %}
