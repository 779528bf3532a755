{#
    analyze_built_at()
    Post-hook of the incremental facts, after analyze_if_never_analyzed(). The tests of these models
    pick their recent rows by `built_at` (macros/rows_since_the_last_passed_build.sql); statistics that
    know only the older builds' times make the planner expect no row there, and a relationships test
    then probed its parent once per row: one of them ran for over 6 minutes at scale 100 instead of
    under a second. Analyzing this one column, on a small sample (statistics target 10: 3,000 rows), costs
    little where the whole table's analyze cost 1.4 s on fct_customer_monthly alone.
#}
{% macro analyze_built_at() -%}
    alter table {{ this }} alter column built_at set statistics 10;
    analyze {{ this }} (built_at)
{%- endmacro %}
