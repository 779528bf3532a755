{#
    Incremental strategy replace_customer_months (fct_customer_monthly): the model's rows for a
    customer are either his history restated from a month on (his whole history when they include
    a row without a month); or the new months carried forward for a customer whose history did not
    change; or, for a customer left without sales, only a row without a month. Carried-forward rows
    all come after the table's last month and are never ordering months. So a customer with a new
    row in or before that month, or an ordering month, loses his old rows from the first month of
    his new ones on, and a customer with a row without a month loses all of them; then every new
    row with a month is inserted.

    Nothing else can be left over: when the last month of data moves back, every customer's whole
    history is restated, so no month after it remains.
#}
{% macro get_incremental_replace_customer_months_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set new_rows = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    -- statistics for the delete's plan: without them it read every row of the target
    analyze {{ new_rows }};

    delete from {{ target }}
    using (
        select
            customer_id,
            min(month) as first_new_month,
            bool_or(month is null) as replaces_whole_history
        from {{ new_rows }}
        where
            has_ordered
            or month is null
            or month <= (select max(month) from {{ target }})
        group by customer_id
    ) as replaced
    where
        {{ target }}.customer_id = replaced.customer_id
        and (replaced.replaces_whole_history or {{ target }}.month >= replaced.first_new_month);

    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ new_rows }}
    where month is not null
{%- endmacro %}
