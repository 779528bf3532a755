{#
    written_since_the_last_build(): a predicate on the `built_at` of another model's rows, true for
    those written after this incremental model's own last build (the latest `built_at` of its rows);
    `true` when this model has none yet. The time is read when the model runs and written as a
    literal: against a subquery the planner expects a third of the rows to qualify and reads them all
    instead of the few by index.
#}
{% macro written_since_the_last_build() -%}
    {%- set predicate = 'true' -%}
    {%- if execute and is_incremental() -%}
        {%- set last_built_at = run_query('select max(built_at) from ' ~ this).columns[0].values()[0] -%}
        {%- if last_built_at is not none -%}
            {%- set predicate = "built_at > '" ~ last_built_at.isoformat() ~ "'::timestamptz" -%}
        {%- endif -%}
    {%- endif -%}
    {{- predicate -}}
{%- endmacro %}
