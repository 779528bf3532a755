{#
    Override of dbt's snapshot clock on Postgres (dispatched from snapshot_get_time()).
    When the var `snapshot_at` is set (e.g. the end of the data interval an orchestrator run
    covers), new snapshot versions are stamped with it, so backfills produce the validity
    dates of the interval instead of the wall-clock time of the run.
    The orchestrator gives it as the environment variable PACBOOK_SNAPSHOT_AT instead: a var
    that changes every night makes dbt parse the whole project again in every task, while an
    environment variable read only when a snapshot runs leaves the saved parse valid.
    Otherwise: current_timestamp, as in dbt-postgres.
#}
{% macro postgres__snapshot_get_time() -%}
    {%- set snapshot_at = var('snapshot_at', none) or env_var('PACBOOK_SNAPSHOT_AT', '') -%}
    {%- if snapshot_at -%}
        '{{ snapshot_at }}'::timestamp
    {%- else -%}
        current_timestamp::timestamp
    {%- endif -%}
{%- endmacro %}
