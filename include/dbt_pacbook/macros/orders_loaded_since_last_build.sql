{#
    orders_loaded_since_last_build(destination_moved=false, restated_in=none)
    For an incremental order fact: the order_ids whose rows in staging (the order, one of its lines,
    one of its status events) arrived after the rows this model was last built from. A status that
    arrives days late therefore restates its order; an order nobody touched is left as it is.
    The model keeps `loaded_at` (the latest arrival among the order's rows it was built from), so
    "last built" is read from the table itself and a failed build is simply taken again next time.

    destination_moved (fct_sales): also the orders whose destination address now lies in another
    dim_geography member than the one the model holds. The geography is type 1, keyed by city and
    country: a city corrected in the source changes the member, and its orders must follow it, or
    they point at a member that is gone. Looked for only when staging's addresses changed since the
    model's last build (audit.staging_change), since it reads every row of the model.

    restated_in (fct_order_fulfilment): also the orders another fact rebuilt since this model's last
    build (by `built_at`), so that a restatement there (a moved destination) reaches this model too.
#}
{% macro orders_loaded_since_last_build(destination_moved=false, restated_in=none) -%}
    {%- set last_build -%}
        (select coalesce(max(loaded_at), '-infinity'::timestamptz) from {{ this }})
    {%- endset -%}
    select order_id from {{ ref('stg_pacbook__cust_order') }} where loaded_at > {{ last_build }}
    union
    select order_id from {{ ref('stg_pacbook__order_line') }} where loaded_at > {{ last_build }}
    union
    select order_id from {{ ref('stg_pacbook__order_history') }} where loaded_at > {{ last_build }}
    {%- if destination_moved %}
    union
    {{ orders_whose_destination_moved() }}
    {%- endif %}
    {%- if restated_in is not none %}
    union
    select order_id from {{ restated_in }}
    where built_at > (select coalesce(max(built_at), '-infinity'::timestamptz) from {{ this }})
    {%- endif %}
{%- endmacro %}

{% macro orders_whose_destination_moved() -%}
    {%- set staging_changes = adapter.get_relation(this.database, 'audit', 'staging_change') if execute else none -%}
    {%- set addresses_changed_since_last_build -%}
        {%- if staging_changes is none -%}
            true
        {%- else -%}
            exists (
                select from {{ staging_changes }}
                where table_name = 'address' and changed_at > (select max(built_at) from {{ this }})
            )
        {%- endif -%}
    {%- endset -%}
    select built.order_id
    from {{ this }} as built
    inner join {{ ref('stg_pacbook__address') }} as addresses
        on built.destination_address_id = addresses.address_id
    left join {{ ref('dim_geography') }} as geographies
        on
            addresses.city = geographies.city
            and addresses.country_id = geographies.country_id
    where
        built.geography_key is distinct from geographies.geography_key
        and {{ addresses_changed_since_last_build }}
{%- endmacro %}
