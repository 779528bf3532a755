{#
    orders_loaded_since_last_build()
    For an incremental order fact: the order_ids whose rows in staging (the order, one of its lines,
    one of its status events) arrived after the rows this model was last built from. A status that
    arrives days late therefore restates its order; an order nobody touched is left as it is.
    The model keeps `loaded_at` (the latest arrival among the order's rows it was built from), so
    "last built" is read from the table itself and a failed build is simply taken again next time.
#}
{% macro orders_loaded_since_last_build() -%}
    {%- set last_build -%}
        (select coalesce(max(loaded_at), '-infinity'::timestamptz) from {{ this }})
    {%- endset -%}
    select order_id from {{ ref('stg_pacbook__cust_order') }} where loaded_at > {{ last_build }}
    union
    select order_id from {{ ref('stg_pacbook__order_line') }} where loaded_at > {{ last_build }}
    union
    select order_id from {{ ref('stg_pacbook__order_history') }} where loaded_at > {{ last_build }}
{%- endmacro %}
