-- Extraction bookkeeping: what each run loaded into staging, and every failed attempt.
create table if not exists audit.extract_load (
    run_id text not null,
    table_name text not null,
    rows_loaded bigint not null,
    started_at timestamptz not null,
    finished_at timestamptz not null default clock_timestamp(),
    primary key (run_id, table_name)
);
comment on table audit.extract_load is
    'One row per source table copied into staging for a pipeline run; written in the same '
    'transaction as the load, so a row here means the staging table holds exactly that load.';
create table if not exists audit.extract_failure (
    run_id text not null,
    table_name text not null,
    failed_at timestamptz not null default clock_timestamp(),
    error text not null
);
comment on table audit.extract_failure is
    'Every failed attempt to copy a source table, with the reason shown to the on-call engineer.';
