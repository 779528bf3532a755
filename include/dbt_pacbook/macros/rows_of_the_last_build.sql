{#
    Data tests of the incremental facts check the rows the fact's latest build wrote, not every row.
    A night rewrites about 1% of fct_sales, fct_order_fulfilment and fct_customer_monthly; testing
    all of their rows again took 40 s of a 54 s nightly build at scale 100 (bench/README.md, figure 4).
    Each of these models stamps its rows with `built_at`, the build's transaction time (one value for
    every row one build wrote; a full refresh writes them all), and is indexed on it.

    A row left as it was keeps passing: each rebuilt order or customer is rewritten whole, and what
    a row refers to (a dimension version, a staged order) is never removed without its facts. Uniqueness
    beyond the night's rows is held by the models' unique indexes. To check every row anyway
    (on-call, after a repair by hand): `dbt test --vars '{test_every_row: true}'`.

    rows_of_the_last_build(relation): the predicate, for a singular test. The last build's time is
    read when the test runs and written as a literal: against a subquery the planner guessed every row
    (the statistics knew one built_at) and read all 4.6 M rows of fct_customer_monthly for each test.
    get_where_subquery(relation): dbt's own macro (the `where` config of a generic test), overridden
    to expand the placeholder __rows_of_the_last_build__; any other `where` works as in dbt.
#}
{% macro rows_of_the_last_build(relation) -%}
    {%- set predicate = 'built_at = (select max(built_at) from ' ~ relation ~ ')' -%}
    {%- if var('test_every_row', false) -%}
        {%- set predicate = 'true' -%}
    {%- elif execute -%}
        {%- set last_build = run_query('select max(built_at) from ' ~ relation).columns[0].values()[0] -%}
        {%- set predicate = "built_at = '" ~ last_build.isoformat() ~ "'::timestamptz" if last_build else 'false' -%}
    {%- endif -%}
    {{- predicate -}}
{%- endmacro %}

{% macro get_where_subquery(relation) -%}
    {%- set placeholder = '__rows_of_the_last_build__' -%}
    {%- set where = (config.get('where') or '') | replace(placeholder, rows_of_the_last_build(relation)) -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
