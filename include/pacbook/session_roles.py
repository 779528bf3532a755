"""The role each part of the pipeline works as, whatever login its connection gives.

A connection may carry an administrator's login (the embedded servers of `make run`, or a deployment
that gives one pipeline login for everything). Each part still works with least privilege: when its
role exists, the login may take it, and the role was granted its part on this database, the session
starts as that role (libpq's ``options=-c role=…``, so not even ``reset role`` leaves it). A statement
the role may not run then fails although the login could run it: a guard against a part doing another's
job by mistake, not against code that means harm (docs/security.md#using-the-roles).

| part | role (config) | proof that the role was granted it here |
|---|---|---|
| reading the source (sensor, extraction, reconciliation) | ``SOURCE_READ_ROLE`` | select on a source table |
| loading the warehouse (extraction, landing zone, run audit) | ``WAREHOUSE_LOAD_ROLE`` | create on ``staging`` |
| transforming (dbt, forecast, reconciliation, reports) | ``WAREHOUSE_TRANSFORM_ROLE`` | create on ``dwh`` |
| reading the marts (exports) | ``MARTS_READ_ROLE`` | usage on ``marts`` |

Without the proof (a server where ``apply_privileges`` never ran on this database), or while the
login still owns what the role would rebuild, the session keeps its login, as before the roles
existed; the choice is logged once per process and role.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from include.pacbook import config
from include.pacbook.privileges import OWNERS, SOURCE_RELATION_KINDS
from include.pacbook.warehouse import connect

log = logging.getLogger("pacbook.roles")


@dataclass(frozen=True)
class Part:
    """A part of the pipeline: the config attribute naming its role (tests rename roles), the schema
    where a grant proves the role was given this part, the privilege that proves it (``select``: on
    some table of the schema), and the ``privileges.Roles`` field of the role when the part owns what
    it builds (privileges.OWNERS)."""

    name: str
    role_setting: str
    schema: str
    privilege: str
    owner_field: str | None = None

    @property
    def role(self) -> str:
        return getattr(config, self.role_setting)

    def owned(self) -> tuple[list[str], list[str]]:
        """The schemas, and the kinds of relation in each, that the part's role owns."""
        rows = [(schema, kinds) for schema, kinds, field in OWNERS if field == self.owner_field]
        return [schema for schema, _ in rows], [kinds for _, kinds in rows]


READING_THE_SOURCE = Part("reading the source", "SOURCE_READ_ROLE", "public", "select")
LOADING = Part("loading the warehouse", "WAREHOUSE_LOAD_ROLE", "staging", "create", "loader")
TRANSFORMING = Part("transforming the warehouse", "WAREHOUSE_TRANSFORM_ROLE", "dwh", "create", "transformer")
READING_THE_MARTS = Part("reading the marts", "MARTS_READ_ROLE", "marts", "usage")

# About the login (session_user), not the current role: a dbt task's process hands its own role to
# every libpq session in PGOPTIONS (dbt_groups.py), and this question is about what the login may do.
# PostgreSQL 16 separates being a member from being allowed to SET the role.
_MAY_TAKE_ROLE = """
select
    session_user,
    coalesce(
        r.rolname <> session_user
        and case
            when current_setting('server_version_num')::int >= 160000 then pg_has_role(session_user, r.oid, 'set')
            else pg_has_role(session_user, r.oid, 'member')
        end,
        false
    ),
    coalesce(
        case
            -- one source table is proof enough: a table the role was not granted then fails, named,
            -- rather than the part falling back to a login that may read everything
            when %(privilege)s = 'select' then exists (
                select from pg_class as c
                where
                    c.relnamespace = n.oid
                    and c.relname = any(%(source_tables)s::text[])
                    and strpos(%(source_kinds)s, c.relkind::text) > 0
                    and has_table_privilege(r.oid, c.oid, 'select')
            )
            else has_schema_privilege(r.oid, n.oid, %(privilege)s)
        end,
        false
    ),
    (
        select count(*)
        from pg_class as c
        join pg_namespace as cn on cn.oid = c.relnamespace
        join unnest(%(owned_schemas)s::text[], %(owned_kinds)s::text[]) as o (schema_name, kinds)
            on o.schema_name = cn.nspname and strpos(o.kinds, c.relkind::text) > 0
        where c.relowner = (select l.oid from pg_roles as l where l.rolname = session_user)
    )
from (select) as here
left join pg_roles as r on r.rolname = %(role)s
left join pg_namespace as n on n.nspname = %(schema)s
"""

# A part asks once a minute per process: Luigi checks each task's target, the listener records each
# task, and every one of them would otherwise open a connection first just to ask.
ANSWER_SECONDS = 60.0
_answers: dict[tuple[str, str], tuple[float, str | None]] = {}


def role_to_take(uri: str, part: Part) -> str | None:
    """The role a session on ``uri`` takes for ``part``, or None when it keeps its login."""
    role = part.role
    key = (uri, f"{part.name}:{role}")
    if (answer := _answers.get(key)) and time.monotonic() - answer[0] < ANSWER_SECONDS:
        return answer[1]
    owned_schemas, owned_kinds = part.owned()
    with connect(uri, autocommit=True) as conn:
        login, may_set, granted, login_owns = conn.execute(
            _MAY_TAKE_ROLE,
            {
                "role": role,
                "schema": part.schema,
                "privilege": part.privilege,
                "owned_schemas": owned_schemas,
                "owned_kinds": owned_kinds,
                "source_tables": list(config.SOURCE_TABLES),
                "source_kinds": SOURCE_RELATION_KINDS,
            },
        ).fetchone()
    taken = role if may_set and granted and not login_owns else None
    if taken:
        why = f"as role {role} (login {login})"
    elif login == role:
        why = f"as login {login}, its own role"
    elif not may_set:
        why = f"as login {login}: it may not take role {role}"
    elif not granted:
        why = f"as login {login}: role {role} was not granted it on this database"
    else:
        why = (
            f"as login {login}: it still owns {login_owns} of the relations role {role} rebuilds; "
            "apply_privileges hands them over (docs/security.md#using-the-roles)"
        )
    if key not in _answers or _answers[key][1] != taken:
        (log.info if taken or login == role or not may_set else log.warning)("%s %s", part.name, why)
    _answers[key] = (time.monotonic(), taken)
    return taken


def role_option(role: str) -> str:
    """The libpq option that starts a session as ``role``."""
    return "-c role=" + role.replace("\\", "\\\\").replace(" ", "\\ ")


def uri_as(uri: str, part: Part) -> str:
    """``uri`` whose sessions start as the part's role when they may take it (else ``uri`` itself).
    Other query parameters are kept byte for byte (libpq reads ``+`` as a plus, not a space)."""
    role = role_to_take(uri, part)
    if role is None:
        return uri
    parts = urlsplit(uri)
    given = config.connection_options(uri)
    pairs = [pair for pair in parts.query.split("&") if pair and pair.split("=", 1)[0] != "options"]
    pairs.append("options=" + quote(f"{given} {role_option(role)}".strip(), safe=""))
    return urlunsplit(parts._replace(query="&".join(pairs)))


def warehouse_uri_for(part: Part) -> str:
    """The warehouse connection as the given part of the pipeline uses it."""
    return uri_as(config.warehouse_uri(), part)


def connect_source(uri: str) -> psycopg.Connection:
    """A read-only session on the source, as the extraction role when the login may take it."""
    conn = connect(uri_as(uri, READING_THE_SOURCE))
    conn.read_only = True
    return conn
