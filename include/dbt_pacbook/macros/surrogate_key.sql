{#
    surrogate_key(['col_a', 'col_b'])
    md5 of the columns cast to text, nulls coalesced to a sentinel, joined with '|'.
    (Own replacement for dbt_utils.generate_surrogate_key: no packages available.)
#}
{% macro surrogate_key(columns) -%}
    {%- set parts = [] -%}
    {%- for column in columns -%}
        {%- do parts.append("coalesce(cast(" ~ column ~ " as text), '_null_')") -%}
    {%- endfor -%}
    md5({{ parts | join(" || '|' || ") }})
{%- endmacro %}
