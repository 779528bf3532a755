{#
    Incremental strategy replace_customer_months (fct_customer_monthly): the model's rows are
    either a customer's whole history, restated, or the new months carried forward for a customer
    whose history did not change. A restated history always holds the customer's first order month
    (has_ordered), a carried-forward month never does: so the customers with an ordering month in
    the new rows lose all their old rows, and every new row is inserted.
#}
{% macro get_incremental_replace_customer_months_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set new_rows = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ target }}
    where customer_id in (
        select customer_id from {{ new_rows }}
        where has_ordered
    );

    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ new_rows }}
{%- endmacro %}

{#
    delete_customer_months_without_sales()
    Post-hook of fct_customer_monthly: a customer whose orders validation has since moved out of
    staging has no sales left, so no new rows replace theirs; they are deleted, so the table holds
    exactly the customers a full build would. (Each customer has a row in the last month.)
#}
{% macro delete_customer_months_without_sales() -%}
    delete from {{ this }}
    where customer_id in (
        select last_rows.customer_id
        from {{ this }} as last_rows
        where
            last_rows.month = (select max(month) from {{ this }})
            and not exists (
                select from {{ ref('fct_sales') }} as sales
                where sales.customer_id = last_rows.customer_id
            )
    )
{%- endmacro %}

{#
    delete_customer_months_after_the_last_order()
    Post-hook of fct_customer_monthly: when the latest month's orders were all removed, the months
    after the latest remaining order are out of range for every customer.
#}
{% macro delete_customer_months_after_the_last_order() -%}
    delete from {{ this }}
    where month > (select date_trunc('month', max(order_date))::date from {{ ref('fct_sales') }})
{%- endmacro %}
