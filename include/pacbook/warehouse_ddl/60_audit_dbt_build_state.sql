-- What a nightly dbt build may leave as it is (docs/warehouse.md#state-aware-builds): a model is
-- rebuilt when its code changed, when a staging table it reads changed, or when a model it reads was
-- rebuilt since its own last build; else it is up to date and its task is skipped.

-- When each staging table last changed, whoever changed it: the extraction, validation moving rows
-- to quarantine, the landing zone, an engineer fixing a row by hand. Statement triggers on every
-- staging table (include/pacbook/warehouse.py, track_staging_changes) keep it.
create table if not exists audit.staging_change (
    table_name text primary key,
    changed_at timestamptz not null
);
comment on table audit.staging_change is
    'When each staging table last changed (insert, update, delete or truncate of at least one row); '
    'a dbt model reading it is rebuilt by the next build after that time.';

-- The last build of each dbt model, snapshot and seed whose tests passed, by the nightly run (Cosmos)
-- or a selection run (dbt CLI). A failed build leaves its node's row as it was: rebuilt next time.
-- dbt's role writes it only through audit.record_dbt_build (below).
create table if not exists audit.dbt_node_build (
    unique_id text primary key,
    fingerprint text not null,
    built_at timestamptz not null,
    run_id text not null
);
comment on table audit.dbt_node_build is
    'Last successful build (node and its tests) of each dbt model, snapshot and seed: when it started, '
    'and the fingerprint of the code and configuration it was built with.';
comment on column audit.dbt_node_build.fingerprint is
    'sha256 of the node''s SQL and configuration, the project''s macros and the dbt version: any change rebuilds it.';

-- Insert and truncate count as a change whatever they wrote (a nightly copy of no rows is rare and only
-- costs a rebuild); delete and update count when they touched a row, since validation runs its
-- delete statements on every table every night. Created once: replacing it needs its owner, and
-- every part of the pipeline applies this file with its own role.
do $do$
begin
    if to_regprocedure('audit.note_staging_change()') is null then
        execute $ddl$
        create function audit.note_staging_change() returns trigger
        language plpgsql
        security definer
        set search_path = pg_catalog, pg_temp
        as $fn$
        begin
            if tg_op = 'DELETE' then
                if not exists (select from gone_rows) then
                    return null;
                end if;
            elsif tg_op = 'UPDATE' then
                if not exists (select from changed_rows) then
                    return null;
                end if;
            end if;
            insert into audit.staging_change (table_name, changed_at)
            values (tg_table_name, clock_timestamp())
            on conflict (table_name) do update set changed_at = excluded.changed_at;
            return null;
        end
        $fn$
        $ddl$;
    end if;
end
$do$;

-- The one write dbt's role (pacbook_transformer, which reads audit but writes none of it) makes here.
do $do$
begin
    if to_regprocedure('audit.record_dbt_build(text, text, timestamptz, text)') is null then
        execute $ddl$
        create function audit.record_dbt_build(
            node_id text, node_fingerprint text, node_built_at timestamptz, node_run_id text
        ) returns void
        language sql
        security definer
        set search_path = pg_catalog, pg_temp
        as $fn$
            insert into audit.dbt_node_build (unique_id, fingerprint, built_at, run_id)
            values (node_id, node_fingerprint, node_built_at, node_run_id)
            on conflict (unique_id) do update
            set fingerprint = excluded.fingerprint, built_at = excluded.built_at, run_id = excluded.run_id
        $fn$
        $ddl$;
    end if;
end
$do$;
