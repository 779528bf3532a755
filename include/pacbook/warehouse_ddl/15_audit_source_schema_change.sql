-- Source columns the extraction met but staging does not take: the rows loaded without them.
create table if not exists audit.source_schema_change (
    run_id text not null,
    table_name text not null,
    change text not null,
    column_name text not null,
    column_type text not null,
    seen_at timestamptz not null default clock_timestamp(),
    primary key (run_id, table_name, column_name)
);
comment on table audit.source_schema_change is
    'Columns added in the source since staging was created; not copied until staging is rebuilt.';
