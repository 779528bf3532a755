{#
    Fails for every row whose column is outside [min_value, max_value] (nulls pass).
    (Own replacement for dbt_utils.accepted_range.)
#}
{% test value_between(model, column_name, min_value, max_value) %}

    select {{ column_name }}
    from {{ model }}
    where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}

{% endtest %}
