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
alter table audit.staging_validation add column if not exists validated_through timestamptz;
alter table audit.staging_validation add column if not exists new_rows_checked bigint;
alter table audit.staging_validation add column if not exists new_rows_rejected bigint;
comment on column audit.staging_validation.rows_checked is
    'Rows of the staging table when validated; every row meets the reference rules on a night its '
    'parent table may have lost rows (copied whole, or rows of it quarantined that night).';
comment on column audit.staging_validation.new_rows_checked is
    'Rows this run loaded (or all, after a copy of a small table): they alone meet the rules about a '
    'row itself; earlier rows passed them when they were loaded.';
comment on column audit.staging_validation.validated_through is
    'Growing tables: the latest load time (_pacbook_loaded_at) among the rows checked; the next '
    'validation checks the rows loaded after it against the rules about a row itself.';
comment on column audit.staging_validation.new_rows_rejected is
    'Of new_rows_checked, the rows rejected: the share the threshold (PACBOOK_MAX_REJECTED_SHARE) '
    'limits. rows_rejected adds the older rows a parent''s rejection orphaned that night.';
