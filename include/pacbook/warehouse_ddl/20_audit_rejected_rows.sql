-- Every row kept out of the warehouse by a rule, counted per run, source and rule. The rows
-- themselves sit in quarantine.<source>; this is the count reports and thresholds read.
create table if not exists audit.rejected_rows (
    run_id text not null,
    source_name text not null,
    rule text not null,
    rejected_rows bigint not null check (rejected_rows >= 0),
    recorded_at timestamptz not null default clock_timestamp(),
    primary key (run_id, source_name, rule)
);
comment on table audit.rejected_rows is
    'Rows rejected per run, source (a source table or a landing file) and rule; the rows are in quarantine.';
