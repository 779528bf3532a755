-- Files in: publishers' price lists (docs/landing_zone.md). Created here rather than by the first
-- load, so that dbt builds on a night without any file (an empty table is a valid state).

-- The good lines of the current version of every landing file. A new version of a file replaces the
-- old version's lines in the same transaction that records it in audit.landing_file.
create table if not exists staging.publisher_book_costs (
    file_name text not null,
    file_version integer not null check (file_version >= 1),
    line_number integer not null check (line_number >= 2),
    publisher text not null,
    file_date date not null,
    isbn13 text not null check (isbn13 ~ '^[0-9]{13}$'),
    unit_cost numeric(12, 4) not null check (unit_cost > 0),
    currency text not null,
    valid_from date not null,
    run_id text not null,
    loaded_at timestamptz not null default clock_timestamp(),
    primary key (file_name, line_number)
);
comment on table staging.publisher_book_costs is
    'Unit costs from publishers'' price lists (landing files), one row per good line of the current '
    'version of each file; bad lines are in quarantine.publisher_book_costs.';

-- Lines that broke a rule, with the raw line as the publisher wrote it. Every version keeps its own.
create table if not exists quarantine.publisher_book_costs (
    run_id text not null,
    file_name text not null,
    file_version integer not null,
    line_number integer not null,
    rule text not null,
    reason text not null,
    raw_line text not null,
    quarantined_at timestamptz not null default clock_timestamp(),
    primary key (file_name, file_version, line_number)
);
comment on table quarantine.publisher_book_costs is
    'Lines of landing files kept out of staging: file, version, line number, the rule broken, why, and the raw line.';

-- The bookmark: every version of every landing file ingested. A file in the landing folder whose
-- checksum equals its current version here is done; any other content is the next version.
create table if not exists audit.landing_file (
    file_name text not null,
    file_version integer not null check (file_version >= 1),
    file_sha256 text not null,
    file_bytes bigint not null,
    publisher text not null,
    file_date date not null,
    parquet_path text not null,
    rows_loaded integer not null check (rows_loaded >= 0),
    rows_quarantined integer not null check (rows_quarantined >= 0),
    blank_lines integer not null check (blank_lines >= 0),
    run_id text not null,
    ingested_at timestamptz not null default clock_timestamp(),
    superseded_at timestamptz,
    primary key (file_name, file_version)
);
create unique index if not exists landing_file_one_current_version
    on audit.landing_file (file_name) where superseded_at is null;
comment on table audit.landing_file is
    'One row per landing file version loaded; written in the same transaction as its rows in staging '
    'and quarantine. superseded_at is set when a corrected version of the file replaces it.';

-- Files that were not price lists at all (bad name, empty, not UTF-8, wrong header, no lines).
create table if not exists audit.landing_file_rejection (
    file_name text not null,
    file_sha256 text not null,
    file_bytes bigint not null,
    reason text not null,
    moved_to text not null,
    run_id text not null,
    rejected_at timestamptz not null default clock_timestamp(),
    primary key (file_name, file_sha256, run_id)
);
comment on table audit.landing_file_rejection is
    'Landing files moved to the rejected folder (beside a .reason file), with the reason.';
