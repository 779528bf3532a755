{#
    Incremental strategy replace_customer_months (fct_customer_monthly): the model's rows are
    either a customer's whole history, restated; or the new months carried forward for a customer
    whose history did not change; or, for a customer left without sales, one row without a month.
    Carried-forward rows all come after the table's last month and are never ordering months. So a
    customer with a new row in or before that month, an ordering month or a row without a month is
    restated or gone, and loses all his old rows; then every new row with a month is inserted.

    Nothing else can be left over: when the last month of data moves back, every customer is
    restated, so no month after it remains.
#}
{% macro get_incremental_replace_customer_months_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set new_rows = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    -- statistics for the delete's plan: without them it read every row of the target
    analyze {{ new_rows }};

    delete from {{ target }}
    where customer_id in (
        select customer_id from {{ new_rows }}
        where
            has_ordered
            or month is null
            or month <= (select max(month) from {{ target }})
    );

    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ new_rows }}
    where month is not null
{%- endmacro %}
