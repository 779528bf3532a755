{#
    Use a model's custom schema verbatim (staging / dwh / marts), without the
    default "<target.schema>_" prefix. Nodes without a custom schema land in
    the target schema (dwh).
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
