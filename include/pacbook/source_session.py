"""Sessions on the PacBook source: read only, and as the extraction role when the login may take it.

The source connection may be an administrator's (the embedded server of `make run`, or a deployment
that gives one login for everything). The pipeline still reads with least privilege: when the role
``config.SOURCE_READ_ROLE`` exists and the login is a member of it (a superuser is), the session
switches to it, so a statement the role may not run fails whatever the login could do.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from include.pacbook import config
from include.pacbook.warehouse import connect

log = logging.getLogger("pacbook.source")

_MAY_TAKE_ROLE = """
select current_user, r.rolname is not null and current_user <> r.rolname
    and pg_has_role(current_user, r.oid, 'MEMBER')
from (select %s::name as wanted) as w
left join pg_roles as r on r.rolname = w.wanted
"""


def connect_source(uri: str) -> psycopg.Connection:
    conn = connect(uri)
    try:
        role = config.SOURCE_READ_ROLE
        login, may_take = conn.execute(_MAY_TAKE_ROLE, (role,)).fetchone()
        if may_take:
            conn.execute(sql.SQL("set session role {}").format(sql.Identifier(role)))
            log.info("reading the source as role %s (login %s)", role, login)
        conn.commit()  # a rolled-back transaction would undo the role
        conn.read_only = True
    except BaseException:
        conn.close()
        raise
    return conn
