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
-- The warehouse lease: at most one running run writes at a time (backfills run beside the nightly
-- schedule and do not count towards the DAG's max_active_runs).
alter table audit.pipeline_run add column if not exists holds_warehouse_since timestamptz;
comment on column audit.pipeline_run.holds_warehouse_since is
    'Set when the run passed the warehouse_free gate: while its status is running, no other run writes. '
    'Released by the run ending (success or failed); a run killed without an ending keeps it until it is '
    'cleared and rerun, or marked failed here (RUNBOOK.md#warehouse-busy).';
comment on column audit.pipeline_run.rows_written is
    'Rows the run''s validation admitted to staging (audit.staging_validation: new_rows_checked - '
    'new_rows_rejected). Not rows_read - rows_rejected: rows_rejected also counts older rows that a '
    'parent''s rejection orphaned that night.';
