"""Least-privilege roles on the source and the warehouse, and the database side of personal-data encryption.

``apply_privileges`` is run by an administrator of both databases (a superuser, or the databases'
owner with CREATEROLE) at deploy time and whenever a role's password changes. Every statement is
idempotent: running it again changes nothing. Passwords and the PII key are passed in by the caller
(from Airflow connections or a secret store): nothing here reads the environment, and passwords reach
the server only as SCRAM verifiers computed on this side, so no server log can show them.

Roles (docs/security.md): on the source, ``pacbook_extractor`` reads the 15 PacBook tables and nothing
else; on the warehouse, ``pacbook_loader`` writes staging/audit/quarantine, ``pacbook_transformer``
reads staging and writes dwh/marts (dbt, snapshots included), ``bi_reader`` reads marts only and
``pii_reader`` reads dwh and may decrypt its personal columns with ``dwh.decrypt_pii``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import psycopg
from psycopg import sql

from include.pacbook.config import (
    DBT_SESSION_SETTINGS,
    MARTS_READ_ROLE,
    PII_READ_ROLE,
    SOURCE_READ_ROLE,
    SOURCE_TABLES,
    WAREHOUSE_LOAD_ROLE,
    WAREHOUSE_TRANSFORM_ROLE,
)
from include.pacbook.warehouse import WAREHOUSE_SCHEMAS

log = logging.getLogger("pacbook.privileges")

# The extraction reads the 15 source tables (config.SOURCE_TABLES, CONTRACT.md §2) in this schema.
SOURCE_SCHEMA = "public"
# pg_class.relkind of what a source table may be: a table, partitioned or not, or a view over one.
SOURCE_RELATION_KINDS = "rpvmf"

# The session setting that carries the PII key into a database session. dbt's models and
# dwh.decrypt_pii read it with current_setting(); it is set per connection (libpq `options`,
# e.g. the PGOPTIONS variable), so the key never appears in SQL text, compiled dbt files or logs.
PII_KEY_SETTING = "pacbook.pii_key"
# Set only while the key is being rotated: the key the data is encrypted with now.
PREVIOUS_PII_KEY_SETTING = "pacbook.pii_key_previous"
MIN_PII_KEY_LENGTH = 16


@dataclass(frozen=True)
class Roles:
    """The roles' names; tests use their own so that they never touch the real ones."""

    extractor: str = SOURCE_READ_ROLE
    loader: str = WAREHOUSE_LOAD_ROLE
    transformer: str = WAREHOUSE_TRANSFORM_ROLE
    bi_reader: str = MARTS_READ_ROLE
    pii_reader: str = PII_READ_ROLE

    def warehouse_roles(self) -> tuple[str, ...]:
        return (self.loader, self.transformer, self.bi_reader, self.pii_reader)

    def all(self) -> tuple[str, ...]:
        return tuple(getattr(self, field.name) for field in fields(self))


DEFAULT_ROLES = Roles()

# What a schema's writer may do to its tables. `staging` has two writers: the loader's raw tables
# and the transformer's dbt staging views (stg_pacbook__*), which dbt creates in that schema.
TABLE_WRITES = ("select", "insert", "update", "delete", "truncate")


def pii_key_options(key: str, previous_key: str | None = None) -> str:
    """The libpq ``options`` value (or PGOPTIONS) that puts the PII key into a session.

    Spaces and backslashes are escaped the way libpq's option parser expects.
    """
    check_pii_key(key)
    settings = [(PII_KEY_SETTING, key)]
    if previous_key is not None:
        check_pii_key(previous_key)
        settings.append((PREVIOUS_PII_KEY_SETTING, previous_key))
    return " ".join(f"-c {name}={_escape_option(value)}" for name, value in settings)


def dbt_session_env(key: str, connection_options: str = "", environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment that gives every session a libpq client (dbt) opens the project's session
    settings (``config.DBT_SESSION_SETTINGS``), the connection's own options (the role it starts as,
    session_roles.py) and the PII key: PGOPTIONS, after any options already given there. Only the
    environment carries the key, so no profile, SQL text or dbt artefact does."""
    given = environ.get("PGOPTIONS", "").strip()
    settings = " ".join(f"-c {name}={_escape_option(value)}" for name, value in DBT_SESSION_SETTINGS.items())
    return {"PGOPTIONS": " ".join(filter(None, (given, settings, connection_options, pii_key_options(key))))}


def new_pii_key() -> str:
    """A fresh random key (256 bits, URL-safe: no character needs escaping anywhere)."""
    return secrets.token_urlsafe(32)


def local_pii_key(path: Path) -> str:
    """The key of a local (embedded) warehouse: generated once into ``path`` (mode 600), then reused.

    Only for the embedded server of `make run` and tests; a real warehouse's key comes from the
    Airflow connection ``pacbook_pii_key`` (docs/security.md#the-key).
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (
            contextlib.suppress(FileExistsError),
            os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file,
        ):
            file.write(new_pii_key())
    key = path.read_text().strip()
    check_pii_key(key)
    return key


def check_pii_key(key: str) -> None:
    if not key or len(key) < MIN_PII_KEY_LENGTH:
        raise ValueError(f"the PII key must have at least {MIN_PII_KEY_LENGTH} characters (docs/security.md)")


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def apply_privileges(
    source_uri: str,
    warehouse_uri: str,
    passwords: Mapping[str, str] | None = None,
    roles: Roles = DEFAULT_ROLES,
    *,
    source_login: str | None = None,
    pipeline_login: str | None = None,
) -> None:
    """Creates or updates every role and grant of the source and the warehouse (idempotent).

    ``passwords`` maps a role name to its password: a role given a password can log in with it; a
    role without one is created NOLOGIN (a group role people's own logins are granted) and an
    existing role keeps its login and password as they are. ``source_login`` and ``pipeline_login``
    are the existing logins of the pipeline's two connections: they are granted the roles their
    parts take (session_roles.py), and what the pipeline login built is handed to those roles.
    """
    apply_source_privileges(source_uri, roles, (passwords or {}).get(roles.extractor), login=source_login)
    apply_warehouse_privileges(warehouse_uri, roles, passwords, pipeline_login=pipeline_login)


def _grant_roles_to_login(conn: psycopg.Connection, roles: tuple[str, ...], login: str) -> None:
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (login,)).fetchone()
    if not exists:
        raise ValueError(f"login {login!r} does not exist on {conn.info.dbname}'s server: create it first")
    roles = tuple(role for role in roles if role != login)  # a login that is the role takes nothing
    if not roles:
        return
    granted = sql.SQL(", ").join(sql.Identifier(role) for role in roles)
    conn.execute(sql.SQL("grant {} to {}").format(granted, sql.Identifier(login)))
    log.info("privileges: login %s may take %s", login, ", ".join(roles))


def apply_source_privileges(
    source_uri: str, roles: Roles = DEFAULT_ROLES, password: str | None = None, *, login: str | None = None
) -> None:
    """``pacbook_extractor``: connect to the source and select its 15 tables; nothing else.

    The source is not ours, so nothing is revoked from PUBLIC there; the role's sessions also
    default to read-only transactions (a second guard, not the boundary: the grants are). A source
    table that does not exist yet (a deployment's first start, before the source is restored) is
    named in the log and granted when this runs again; until the role may read a table the
    source part keeps its login (session_roles).
    """
    with psycopg.connect(source_uri, autocommit=True) as conn:
        _ensure_role(conn, roles.extractor, password)
        dbname = conn.info.dbname
        extractor = sql.Identifier(roles.extractor)
        conn.execute(sql.SQL("grant connect on database {} to {}").format(sql.Identifier(dbname), extractor))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(sql.Identifier(SOURCE_SCHEMA), extractor))
        present = {
            name
            for (name,) in conn.execute(
                "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relname = any(%s) and strpos(%s, c.relkind::text) > 0",
                (SOURCE_SCHEMA, list(SOURCE_TABLES), SOURCE_RELATION_KINDS),
            )
        }
        for table in sorted(present):
            conn.execute(
                sql.SQL("grant select on table {} to {}").format(sql.Identifier(SOURCE_SCHEMA, table), extractor)
            )
        missing = [table for table in SOURCE_TABLES if table not in present]
        if missing:
            log.warning(
                "privileges source: %s may not read %d source tables that do not exist yet in %s.%s: %s;"
                " run this again once the source is loaded",
                roles.extractor,
                len(missing),
                dbname,
                SOURCE_SCHEMA,
                ", ".join(missing),
            )
        conn.execute(
            sql.SQL("alter role {} in database {} set default_transaction_read_only = on").format(
                extractor, sql.Identifier(dbname)
            )
        )
        if login is not None:
            _grant_roles_to_login(conn, (roles.extractor,), login)
    log.info("privileges source role=%s tables=%d", roles.extractor, len(present))


def apply_warehouse_privileges(
    warehouse_uri: str,
    roles: Roles = DEFAULT_ROLES,
    passwords: Mapping[str, str] | None = None,
    *,
    pipeline_login: str | None = None,
) -> None:
    """Schemas, pgcrypto, the four warehouse roles, their grants and default privileges, dwh.decrypt_pii;
    the pipeline's login, when named, may take the loader, transformer and bi_reader roles."""
    passwords = passwords or {}
    with psycopg.connect(warehouse_uri, autocommit=True) as conn:
        crypto_schema = _ensure_pgcrypto(conn)  # first: without it nothing else is worth doing
        for role in roles.warehouse_roles():
            _ensure_role(conn, role, passwords.get(role))
        if pipeline_login is not None:
            _grant_roles_to_login(conn, (roles.loader, roles.transformer, roles.bi_reader), pipeline_login)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext('pacbook.apply_privileges'))")
            _lock_down_database(conn, roles)
            for schema in WAREHOUSE_SCHEMAS:
                conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            _grant_loader(conn, roles)
            _grant_transformer(conn, roles)
            _grant_readers(conn, roles)
            # After the grants: a new owner must hold CREATE on the schema unless a superuser hands over.
            _hand_over(conn, roles, also_from=pipeline_login)
            _create_decrypt_function(conn, roles, crypto_schema)
    log.info("privileges warehouse roles=%s", ",".join(roles.warehouse_roles()))


def _ensure_role(conn: psycopg.Connection, role: str, password: str | None) -> None:
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
    name = sql.Identifier(role)
    attributes = sql.SQL("nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit")
    if not exists:
        with contextlib.suppress(psycopg.errors.DuplicateObject):  # created meanwhile by a concurrent run
            conn.execute(sql.SQL("create role {} nologin {}").format(name, attributes))
    else:
        conn.execute(sql.SQL("alter role {} {}").format(name, attributes))
    if password is not None:
        if not password:
            raise ValueError(f"empty password given for role {role}")
        # Only the SCRAM verifier travels to the server: a logged statement cannot reveal the password.
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        conn.execute(sql.SQL("alter role {} login password {}").format(name, sql.Literal(verifier)))


def _ensure_pgcrypto(conn: psycopg.Connection) -> str:
    available = conn.execute("select 1 from pg_available_extensions where name = 'pgcrypto'").fetchone()
    if not available:
        server = conn.execute("select setting from pg_settings where name = 'server_version'").fetchone()[0]
        raise RuntimeError(
            f"pgcrypto is not installed on the warehouse server (PostgreSQL {server}): personal columns "
            "cannot be encrypted. Install PostgreSQL's contrib modules there (docs/security.md#pgcrypto)."
        )
    conn.execute("create extension if not exists pgcrypto")
    return conn.execute(
        "select extnamespace::regnamespace::text from pg_extension where extname = 'pgcrypto'"
    ).fetchone()[0]


def _lock_down_database(conn: psycopg.Connection, roles: Roles) -> None:
    """The warehouse is ours: only the project's roles (and its owner) may connect."""
    database = sql.Identifier(conn.info.dbname)
    conn.execute(sql.SQL("revoke all on database {} from public").format(database))
    conn.execute(sql.SQL("revoke create on schema public from public"))
    for role in roles.warehouse_roles():
        conn.execute(sql.SQL("grant connect on database {} to {}").format(database, sql.Identifier(role)))
    # dbt's snapshots and incremental models, and the extraction's increments, stage rows in temporary tables.
    for role in (roles.loader, roles.transformer):
        conn.execute(sql.SQL("grant temporary on database {} to {}").format(database, sql.Identifier(role)))


def _grant_on_schema(
    conn: psycopg.Connection,
    schema: str,
    grantee: str,
    table_privileges: tuple[str, ...],
    creators: tuple[str, ...],
    *,
    create: bool = False,
) -> None:
    """Usage (and create) on the schema, and the table privileges on every table or view that
    ``creators`` or the administrator running this own there: now (grants) and later (default
    privileges). Both cover exactly the same objects, so a second run changes nothing."""
    schema_id, grantee_id = sql.Identifier(schema), sql.Identifier(grantee)
    schema_privileges = sql.SQL("usage, create" if create else "usage")
    conn.execute(sql.SQL("grant {} on schema {} to {}").format(schema_privileges, schema_id, grantee_id))
    privileges = sql.SQL(", ").join(sql.SQL(p) for p in table_privileges)
    owners = [creator for creator in (*creators, conn.info.user) if creator != grantee]
    writes = "insert" in table_privileges
    existing = conn.execute(
        """
        select relname, relkind = 'S'
        from pg_class
        where
            relnamespace = %s::regnamespace
            and relkind in ('r', 'p', 'v', 'm', 'f', 'S')
            and pg_get_userbyid(relowner) = any(%s)
        order by relname
        """,
        (schema, owners),
    ).fetchall()
    for relation, is_sequence in existing:
        relation_id = sql.Identifier(schema, relation)
        if not is_sequence:
            conn.execute(sql.SQL("grant {} on table {} to {}").format(privileges, relation_id, grantee_id))
        elif writes:
            conn.execute(sql.SQL("grant usage, select, update on sequence {} to {}").format(relation_id, grantee_id))
    for owner in owners:
        owner_id = sql.Identifier(owner)
        conn.execute(
            sql.SQL("alter default privileges for role {} in schema {} grant {} on tables to {}").format(
                owner_id, schema_id, privileges, grantee_id
            )
        )
        if writes:
            conn.execute(
                sql.SQL(
                    "alter default privileges for role {} in schema {} grant usage, select, update on sequences to {}"
                ).format(owner_id, schema_id, grantee_id)
            )


# Which role owns, and so may rebuild, what the pipeline keeps in each schema: (schema, kinds, role
# field). In staging the loader's copies are tables, dbt's models views.
OWNERS = (
    ("staging", "r p", "loader"),
    ("staging", "v m", "transformer"),
    ("audit", "r p v m f", "loader"),
    ("quarantine", "r p v m f", "loader"),
    ("dwh", "r p v m f", "transformer"),
    ("marts", "r p v m f", "transformer"),
)
_ALTER_OWNER = {"r": "table", "p": "table", "f": "foreign table", "v": "view", "m": "materialized view"}


def _hand_over(conn: psycopg.Connection, roles: Roles, also_from: str | None = None) -> None:
    """What the administrator's own login built (a warehouse the pipeline wrote before it worked as
    its roles: `make run` before them, an upgrade) goes to the role that rebuilds it, with the audit
    functions the loader's DDL replaces; so does what the pipeline's own login (``also_from``) built.
    Any other login's objects are left and named: they may not be the pipeline's."""
    admin = conn.info.user
    from_owners = [admin, *([also_from] if also_from else [])]
    moved = 0
    for schema, kinds, field in OWNERS:
        owner = sql.Identifier(getattr(roles, field))
        found = conn.execute(
            """
            select c.relname, c.relkind, pg_get_userbyid(c.relowner)
            from pg_class as c
            where c.relnamespace = %s::regnamespace and c.relkind::text = any(%s)
              and pg_get_userbyid(c.relowner) not in (%s, %s)
              and not exists (  -- an extension's objects stay with it
                  select from pg_depend as d
                  where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e'
              )
            order by c.relname
            """,
            (schema, kinds.split(), roles.loader, roles.transformer),
        ).fetchall()
        for relation, kind, current in found:
            if current not in from_owners:
                log.warning("privileges: %s.%s belongs to %s, not handed to %s", schema, relation, current, owner)
                continue
            conn.execute(
                sql.SQL("alter {} {} owner to {}").format(
                    sql.SQL(_ALTER_OWNER[kind]), sql.Identifier(schema, relation), owner
                )
            )
            moved += 1
    functions = conn.execute(
        """
        select p.oid::regprocedure::text from pg_proc as p
        where p.pronamespace = 'audit'::regnamespace and p.prokind = 'f' and pg_get_userbyid(p.proowner) = any(%s)
          and not exists (
              select from pg_depend as d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e'
          )
        """,
        (from_owners,),
    ).fetchall()
    for (function,) in functions:
        conn.execute(sql.SQL("alter function {} owner to {}").format(sql.SQL(function), sql.Identifier(roles.loader)))
    if moved or functions:
        log.info("privileges: %d relations and %d audit functions handed to their roles", moved, len(functions))


def _grant_loader(conn: psycopg.Connection, roles: Roles) -> None:
    """The extraction and landing-zone tasks: create, fill and empty staging, audit and quarantine tables."""
    for schema in ("staging", "audit", "quarantine"):
        _grant_on_schema(conn, schema, roles.loader, TABLE_WRITES, creators=(), create=True)


def _grant_transformer(conn: psycopg.Connection, roles: Roles) -> None:
    """dbt: reads the loader's staging tables, creates its staging views there, owns dwh and marts.
    Reads the audit tables (when staging changed: state-aware builds, build_state.py) and records
    its builds only through audit.record_dbt_build."""
    _grant_on_schema(conn, "staging", roles.transformer, ("select",), creators=(roles.loader,), create=True)
    for schema in ("dwh", "marts"):
        _grant_on_schema(conn, schema, roles.transformer, TABLE_WRITES, creators=(), create=True)
    _grant_on_schema(conn, "audit", roles.transformer, ("select",), creators=(roles.loader,))
    # The reconciliation and the reports count the rows kept out of the model.
    _grant_on_schema(conn, "quarantine", roles.transformer, ("select",), creators=(roles.loader,))


def _grant_readers(conn: psycopg.Connection, roles: Roles) -> None:
    _grant_on_schema(conn, "marts", roles.bi_reader, ("select",), creators=(roles.transformer,))
    _grant_on_schema(conn, "dwh", roles.pii_reader, ("select",), creators=(roles.transformer,))


def _create_decrypt_function(conn: psycopg.Connection, roles: Roles, crypto_schema: str) -> None:
    """``dwh.decrypt_pii(ciphertext)``: the plaintext of a personal column, for pii_reader only.

    It decrypts with the key of the caller's own session (PII_KEY_SETTING): the key is never stored
    in the database, so neither a dump nor a role without the key can read personal data.
    """
    conn.execute(
        sql.SQL(
            """
            create or replace function dwh.decrypt_pii(ciphertext bytea) returns text
            language plpgsql stable strict
            set search_path = pg_catalog, pg_temp
            as $body$
            declare
                pii_key text := current_setting({setting}, true);
            begin
                if coalesce(pii_key, '') = '' then
                    raise exception 'no PII key in this session: connect with options "-c %=<key>" '
                        '(docs/security.md#reading-personal-data)', {setting};
                end if;
                return {decrypt}(ciphertext, pii_key);
            end
            $body$
            """
        ).format(setting=sql.Literal(PII_KEY_SETTING), decrypt=sql.Identifier(crypto_schema, "pgp_sym_decrypt"))
    )
    comment = "Plaintext of a personal dwh column (pgcrypto); needs role pii_reader and the PII key in the session."
    conn.execute(sql.SQL("comment on function dwh.decrypt_pii(bytea) is {}").format(sql.Literal(comment)))
    conn.execute("revoke all on function dwh.decrypt_pii(bytea) from public")
    conn.execute(
        sql.SQL("grant execute on function dwh.decrypt_pii(bytea) to {}").format(sql.Identifier(roles.pii_reader))
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m include.pacbook.privileges`: the roles and grants of both servers, applied by an
    administrator (config.admin_uris); the logins of the pipeline's two connections may then take
    the roles of their parts, and what the pipeline's login built is handed to those roles."""
    import argparse

    from include.pacbook import config

    parser = argparse.ArgumentParser(prog="python -m include.pacbook.privileges", description=main.__doc__)
    parser.add_argument("--source-login", help="login of the pacbook_source connection (default: its URI's user)")
    parser.add_argument("--pipeline-login", help="login of the pacbook_warehouse connection (default: its URI's user)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source_admin, warehouse_admin = config.admin_uris()
    source_login = args.source_login or config.connection_parts(config.source_uri()).user
    pipeline_login = args.pipeline_login or config.connection_parts(config.warehouse_uri()).user
    apply_privileges(source_admin, warehouse_admin, source_login=source_login, pipeline_login=pipeline_login)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
