-- One row per DAG run. 'running' with no finished_at is a run that started and has not ended:
-- still going, or killed (a worker lost, a machine stopped) — which is why it is never inferred.
create table if not exists audit.pipeline_run (
    dag_id text not null,
    run_id text not null,
    run_type text,
    data_interval_start timestamptz,
    data_interval_end timestamptz,
    status text not null check (status in ('running', 'success', 'failed')),
    started_at timestamptz not null default clock_timestamp(),
    finished_at timestamptz,
    duration_seconds double precision generated always as (
        extract(epoch from finished_at - started_at)
    ) stored,
    rows_read bigint,
    rows_written bigint,
    rows_rejected bigint,
    rows_by_table jsonb,
    failed_task text,
    error text,
    primary key (dag_id, run_id)
);
comment on table audit.pipeline_run is
    'One row per pipeline run: interval, status, timing, and rows read/written/rejected per source '
    'table (rows_by_table). A run never finished stays status running with finished_at null.';
