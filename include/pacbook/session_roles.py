"""The role each part of the pipeline works as, whatever login its connection gives.

A connection may carry an administrator's login (the embedded servers of `make run`, or a deployment
that gives one pipeline login for everything). Each part still works with least privilege: when its
role exists, the login may take it, and the role was granted its part on this database, the session
starts as that role (libpq's ``options=-c role=…``, so not even ``reset role`` leaves it). A statement
the role may not run then fails, whatever the login could do (docs/security.md#using-the-roles).

| part | role (config) | proof that the role was granted it here |
|---|---|---|
| reading the source (sensor, extraction, reconciliation) | ``SOURCE_READ_ROLE`` | select on a table of ``public`` |
| loading the warehouse (extraction, landing zone, run audit) | ``WAREHOUSE_LOAD_ROLE`` | create on ``staging`` |
| transforming (dbt, forecast, reconciliation, reports) | ``WAREHOUSE_TRANSFORM_ROLE`` | create on ``dwh`` |
| reading the marts (exports) | ``MARTS_READ_ROLE`` | usage on ``marts`` |

Without the proof (a server where ``apply_privileges`` never ran on this database) the session keeps
its login, as before the roles existed; the choice is logged once per process and role.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg

from include.pacbook import config
from include.pacbook.warehouse import connect

log = logging.getLogger("pacbook.roles")


@dataclass(frozen=True)
class Part:
    """A part of the pipeline: the config attribute naming its role (tests rename roles), the schema
    where a grant proves the role was given this part, and the privilege that proves it (``select``:
    on some table of the schema)."""

    name: str
    role_setting: str
    schema: str
    privilege: str

    @property
    def role(self) -> str:
        return getattr(config, self.role_setting)


READING_THE_SOURCE = Part("reading the source", "SOURCE_READ_ROLE", "public", "select")
LOADING = Part("loading the warehouse", "WAREHOUSE_LOAD_ROLE", "staging", "create")
TRANSFORMING = Part("transforming the warehouse", "WAREHOUSE_TRANSFORM_ROLE", "dwh", "create")
READING_THE_MARTS = Part("reading the marts", "MARTS_READ_ROLE", "marts", "usage")

# The login, not the current role: a dbt task's process hands its own role to every libpq session
# in PGOPTIONS (dbt_groups.py), and this question is about what the login may do.
_MAY_TAKE_ROLE = """
select
    session_user,
    coalesce(
        r.rolname <> session_user
        and pg_has_role(session_user, r.oid, 'member')
        and case
            when %(privilege)s = 'select' then exists (
                select from pg_class as c
                where c.relnamespace = n.oid and c.relkind in ('r', 'p') and has_table_privilege(r.oid, c.oid, 'select')
            )
            else has_schema_privilege(r.oid, n.oid, %(privilege)s)
        end,
        false
    )
from (select) as here
left join pg_roles as r on r.rolname = %(role)s
left join pg_namespace as n on n.nspname = %(schema)s
"""

_logged: set[tuple[str, str, bool]] = set()


def role_to_take(uri: str, part: Part) -> str | None:
    """The role a session on ``uri`` takes for ``part``, or None when it keeps its login."""
    role = part.role
    with connect(uri, autocommit=True) as conn:
        login, may_take = conn.execute(
            _MAY_TAKE_ROLE, {"role": role, "schema": part.schema, "privilege": part.privilege}
        ).fetchone()
    if (config.redact(uri), role, may_take) not in _logged:
        _logged.add((config.redact(uri), role, may_take))
        if may_take:
            log.info("%s as role %s (login %s)", part.name, role, login)
        elif login != role:
            log.info("%s as login %s: role %s was not granted it on this database", part.name, login, role)
    return role if may_take else None


def role_option(role: str) -> str:
    """The libpq option that starts a session as ``role``."""
    return "-c role=" + role.replace("\\", "\\\\").replace(" ", "\\ ")


def uri_as(uri: str, part: Part) -> str:
    """``uri`` whose sessions start as the part's role when they may take it (else ``uri`` itself)."""
    role = role_to_take(uri, part)
    if role is None:
        return uri
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([*(value for key, value in query if key == "options"), role_option(role)])
    query = [(key, value) for key, value in query if key != "options"] + [("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def warehouse_uri_for(part: Part) -> str:
    """The warehouse connection as the given part of the pipeline uses it."""
    return uri_as(config.warehouse_uri(), part)


def connect_source(uri: str) -> psycopg.Connection:
    """A read-only session on the source, as the extraction role when the login may take it."""
    conn = connect(uri_as(uri, READING_THE_SOURCE))
    conn.read_only = True
    return conn
