{#
    delete_orders_gone_from_staging()
    Post-hook of an incremental order model: an order that validation has since moved out of
    staging (say, its customer was quarantined tonight) brings no new rows, so delete+insert
    never touches it; this removes it, so the table holds exactly the orders a full build would.
#}
{% macro delete_orders_gone_from_staging() -%}
    delete from {{ this }} as built
    where not exists (
        select from {{ ref('stg_pacbook__cust_order') }} as staged
        where staged.order_id = built.order_id
    )
{%- endmacro %}
