-- Incremental extraction: how far each fast-growing source table has been loaded.
create table if not exists audit.extraction_watermark (
    table_name text primary key,
    key_column text not null,
    high_water_key bigint,
    run_id text not null,
    updated_at timestamptz not null default clock_timestamp()
);
comment on table audit.extraction_watermark is
    'Per growing source table, the highest serial key loaded into staging: the next increment also takes '
    'every row above it whatever its date, so rows recorded late are not missed. Written in the '
    'transaction of the load; deleted rows here mean the next load of that table is a full one.';
alter table audit.extract_load add column if not exists load_mode text not null default 'full';
comment on column audit.extract_load.load_mode is
    '"full": the table was replaced (small tables when they changed, growing tables on first load and '
    'full_refresh); "increment": the interval''s rows and the late ones replaced their earlier copies; '
    '"unchanged": a small table whose source fingerprint equals its last copy''s, left as it was.';
alter table audit.extract_load add column if not exists source_fingerprint text;
comment on column audit.extract_load.source_fingerprint is
    'Small tables: row count and an order-free sum of row hashes of the source table when loaded; '
    'the next night copies the table again only if it differs ("unchanged" load_mode otherwise).';
