-- One row per staging table validated in a run; written in the same transaction as the quarantine,
-- so its presence means the run's validation is complete and must not be repeated.
create table if not exists audit.staging_validation (
    run_id text not null,
    table_name text not null,
    rows_checked bigint not null,
    rows_rejected bigint not null,
    validated_at timestamptz not null default clock_timestamp(),
    primary key (run_id, table_name)
);
comment on table audit.staging_validation is
    'Rows checked and rejected per staging table and run; the rejected rows are in quarantine.<table>.';
