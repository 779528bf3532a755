{#
    Data tests of the incremental facts check the rows written since the model's last build whose
    tests passed, not every row. A night rewrites about 1% of fct_sales, fct_order_fulfilment and
    fct_customer_monthly; testing all of their rows again took 40 s of a 54 s nightly build at
    scale 100 (bench/README.md, figure 4). Each of these models stamps its rows with `built_at`,
    the build's transaction time, and is indexed on it.

    The mark is the start of the model's last build whose tests passed (audit.dbt_node_build, kept
    by the nightly run: include/pacbook/build_state.py), so the scope holds the night's rows, the
    rows of that last good build, and the rows of any build in between whose tests failed: a failed
    night's rows stay under test until a build passes with them. Without a record (a warehouse
    built by hand, a first build) every row is tested.

    A row left as it was keeps passing: each rebuilt order or customer is rewritten whole, and what a
    row refers to (a dimension version, a staged order) is never removed without its facts; the one
    exception, dim_geography (a corrected city changes its key; its orders are restated, found by
    comparing every row), keeps its relationships tests whole.
    Uniqueness beyond the scope is held by the models' primary keys and unique indexes. To check every row anyway
    (on-call, after a repair by hand): `dbt test --vars '{test_every_row: true}'`.

    The staging views of the three growing tables (stg_pacbook__cust_order, __order_line,
    __order_history) are scoped the same way by when their rows reached staging (`loaded_at`, indexed):
    a night loads ~1% of their rows, and checking all of them again took 13 s of node time of a
    nightly build at scale 100. It is validation's own scope (include/pacbook/validation.py,
    ValidationScope): a load replaces the staged rows whose key it brings, so a new row cannot meet an
    old one with its key, and a row whose parent leaves staging leaves with it (quarantined). The
    column is NOT NULL with a default, so no row escapes the scope. Their relationships tests check
    every row: each reads two staging views, neither upstream of the other, so in the DAG it runs in
    the layer's tests task, after the view's own task has recorded tonight's build (its scope would
    be empty).

    rows_since_the_last_passed_build(relation, column='built_at'): the predicate, for a singular
    test. The mark is read when the test runs and written as a literal: against a subquery the
    planner guessed every row and read all 4.6 M rows of fct_customer_monthly for each test.
    get_where_subquery(relation): dbt's own macro (the `where` config of a generic test), overridden
    to expand the placeholders __rows_since_the_last_passed_build__ (on `built_at`) and
    __rows_loaded_since_the_last_passed_build__ (on `loaded_at`); any other `where` works as in dbt.
#}
{% macro rows_since_the_last_passed_build(relation, column='built_at') -%}
    {%- set predicate = 'true' -%}
    {%- if execute and not var('test_every_row', false) -%}
        {%- set build_records = adapter.get_relation(relation.database, 'audit', 'dbt_node_build') -%}
        {%- if build_records is not none -%}
            {%- set node_id = 'model.' ~ project_name ~ '.' ~ relation.identifier -%}
            {%- set found = run_query(
                'select built_at from ' ~ build_records ~ ' where unique_id = ' ~ dbt.string_literal(node_id)
            ).columns[0].values() -%}
            {%- if found -%}
                {%- set predicate = column ~ " >= '" ~ found[0].isoformat() ~ "'::timestamptz" -%}
            {%- endif -%}
        {%- endif -%}
    {%- endif -%}
    {{- predicate -}}
{%- endmacro %}

{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') or '' -%}
    {#- two ifs, not a loop: a value set inside a Jinja loop does not outlive the loop -#}
    {%- if '__rows_since_the_last_passed_build__' in where -%}
        {%- set where = where | replace(
            '__rows_since_the_last_passed_build__', rows_since_the_last_passed_build(relation, 'built_at')
        ) -%}
    {%- endif -%}
    {%- if '__rows_loaded_since_the_last_passed_build__' in where -%}
        {%- set where = where | replace(
            '__rows_loaded_since_the_last_passed_build__', rows_since_the_last_passed_build(relation, 'loaded_at')
        ) -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
