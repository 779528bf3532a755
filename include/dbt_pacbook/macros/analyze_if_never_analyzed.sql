{#
    analyze_if_never_analyzed()
    Post-hook of the incremental models. A table dbt has just created (the first build, a full
    refresh) has no statistics, and the models that read it next in the same build would be planned
    blind (docs/warehouse.md, section 10). An incremental night changes a few percent of the rows,
    which the statistics taken before still describe, and autovacuum analyzes again past 10%;
    analyzing anyway cost 1.4 s a night on fct_customer_monthly alone at scale 100.
#}
{% macro analyze_if_never_analyzed() -%}
    do $analyze$
    begin
        if exists (
            select from pg_stat_user_tables
            where
                relid = to_regclass('{{ this.include(database=false) }}')
                and last_analyze is null
                and last_autoanalyze is null
        ) then
            analyze {{ this }};
        end if;
    end
    $analyze$
{%- endmacro %}
