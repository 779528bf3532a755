#!/usr/bin/env bash
# pacbook-db, first start only (the postgres image runs /docker-entrypoint-initdb.d/ on an empty
# volume): the two PacBook databases and their roles.
#   pacbook         owns pacbook_source and pacbook_warehouse (the warehouse URI logs in as it)
#   pacbook_reader  may only read pacbook_source (the source URI logs in as it: CONTRACT.md §1,
#                   the pipeline never writes to the source)
# Passwords come from the environment (.env for local development).
set -euo pipefail

: "${PACBOOK_DB_PASSWORD:?PACBOOK_DB_PASSWORD is not set}"
: "${PACBOOK_READER_PASSWORD:?PACBOOK_READER_PASSWORD is not set}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=owner_password="$PACBOOK_DB_PASSWORD" \
  --set=reader_password="$PACBOOK_READER_PASSWORD" \
  --set=admin_role="$POSTGRES_USER" <<'SQL'
create role pacbook login password :'owner_password';
create role pacbook_reader login password :'reader_password';

create database pacbook_source owner pacbook;
create database pacbook_warehouse owner pacbook;
revoke all on database pacbook_source from public;
revoke all on database pacbook_warehouse from public;
grant connect on database pacbook_source to pacbook_reader;

\connect pacbook_source
-- tables created later by the owner (or by the admin, e.g. a dump restored as postgres) are readable
grant usage on schema public to pacbook_reader;
grant select on all tables in schema public to pacbook_reader;
alter default privileges for role pacbook in schema public grant select on tables to pacbook_reader;
alter default privileges for role :"admin_role" in schema public grant select on tables to pacbook_reader;
SQL

echo "pacbook-db: databases pacbook_source and pacbook_warehouse created"
