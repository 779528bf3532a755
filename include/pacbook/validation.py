"""Keeps rows that break a rule (``validation_rules``) out of the warehouse, and counts them.

After a run's extraction, each rule moves its bad rows from ``staging.<table>`` to
``quarantine.<table>`` (with the rule, the run and the raw row as JSON) and counts them in
``audit.rejected_rows``. All of a run's validation commits in one transaction together with its
record in ``audit.staging_validation``, so a rerun of the same run neither repeats nor loses it.
A run whose share of rejected rows in any table passes the threshold fails, naming the tables.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from psycopg import sql

from include.luigi_tasks.streaming_copy import LOADED_AT_COLUMN
from include.pacbook import config, warehouse
from include.pacbook.validation_rules import RULES, Rule, rules_for

log = logging.getLogger("pacbook.validation")


class TooManyRejectedRowsError(RuntimeError):
    """More rows failed validation than the configured share allows; the message names the tables."""


@dataclass(frozen=True)
class TableValidation:
    """One table's validation in a run. The share that the threshold limits is that of the rows the
    run brought (``new_rows_checked``) that were rejected: older rows a parent's rejection orphaned
    tonight count in ``rows_rejected``, and their cause in the parent's share."""

    table: str
    new_rows_checked: int
    new_rows_rejected: int
    rows_rejected: int

    @property
    def rejected_share(self) -> float:
        return self.new_rows_rejected / self.new_rows_checked if self.new_rows_checked else 0.0


def is_validated(warehouse_uri: str, run_id: str) -> bool:
    with warehouse.connect(warehouse_uri) as conn:
        found = conn.execute("select to_regclass('audit.staging_validation') is not null").fetchone()[0]
        return bool(
            found
            and conn.execute("select 1 from audit.staging_validation where run_id = %s limit 1", (run_id,)).fetchone()
        )


def _quarantine_statement(rule: Rule, scope: ValidationScope, every_row: bool = False) -> sql.Composed:
    staging = sql.Identifier("staging", rule.table)
    violation = sql.SQL(rule.violation).format(
        staging=staging, as_of=sql.Placeholder("as_of"), other_rows_in_scope=scope.rows("o")
    )
    in_scope = sql.SQL("true") if every_row else scope.rows("t")
    return sql.SQL(
        """
        with rejected as (
            delete from {staging} as t where {in_scope} and ({violation}) returning t.*
        )
        insert into {quarantine} (run_id, rule, reason, source_row)
        select %(run_id)s, %(rule)s, %(reason)s, to_jsonb(rejected) from rejected
        """
    ).format(
        staging=staging, in_scope=in_scope, violation=violation, quarantine=sql.Identifier("quarantine", rule.table)
    )


@dataclass(frozen=True)
class ValidationScope:
    """Which rows of a staging table tonight's rules look at.

    Rows already validated by an earlier run are not checked again against the rules about a row
    itself (its key, its text, its price, its dates): they have not changed. A growing table's
    increment is the rows loaded since the last validation (``_pacbook_loaded_at``); a small table
    is checked whole when it was copied since its last validation, else not at all. The key rules
    compare only rows in scope with each other: a load replaces the rows whose key it brings, so a
    new row cannot meet an old one with its key. A foreign-key rule checks every row of the child
    when its parent may have lost rows tonight (copied whole, or rows of it quarantined in this
    validation: a customer quarantined tonight takes his old orders along), else the scope.
    """

    everything: bool
    growing: bool = False  # a growing table: its rows carry when they were loaded
    loaded_after: dt.datetime | None = None  # of a growing table: the rows loaded after this time

    def last_load_checked(self) -> sql.Composable:
        """What the audit records as validated through: the latest load time among the new rows checked."""
        if not self.growing:
            return sql.SQL("null::timestamptz")
        return sql.SQL("max(t.{}) filter (where {})").format(sql.Identifier(LOADED_AT_COLUMN), self.rows("t"))

    def rows(self, alias: str) -> sql.Composable:
        if self.everything:
            return sql.SQL("true")
        if self.loaded_after is None:
            return sql.SQL("false")
        return sql.SQL("{} > {}").format(sql.Identifier(alias, LOADED_AT_COLUMN), sql.Literal(self.loaded_after))


def _scope(conn, table: str) -> ValidationScope:
    growing = conn.execute(
        "select 1 from information_schema.columns "
        "where table_schema = 'staging' and table_name = %s and column_name = %s",
        (table, LOADED_AT_COLUMN),
    ).fetchone()
    if growing:
        since = conn.execute(
            "select max(validated_through) from audit.staging_validation where table_name = %s", (table,)
        ).fetchone()[0]
        return ValidationScope(everything=since is None, growing=True, loaded_after=since)
    last_copied, last_validated = conn.execute(
        """
        select (select max(finished_at) from audit.extract_load where table_name = %(t)s and load_mode <> 'unchanged'),
               (select max(validated_at) from audit.staging_validation where table_name = %(t)s)
        """,
        {"t": table},
    ).fetchone()
    return ValidationScope(everything=last_validated is None or last_copied is None or last_copied > last_validated)


def validate_staging(
    warehouse_uri: str, run_id: str, as_of: dt.datetime, tables: tuple[str, ...] = config.SOURCE_TABLES
) -> list[TableValidation]:
    """Quarantines the run's bad rows (once), then fails if any table rejected too large a share."""
    quarantine_bad_rows(warehouse_uri, run_id, as_of, tables)
    log_rejections(warehouse_uri, run_id)
    results = validation_results(warehouse_uri, run_id)
    check_rejected_share(results)
    return results


def quarantine_bad_rows(
    warehouse_uri: str, run_id: str, as_of: dt.datetime, tables: tuple[str, ...] = config.SOURCE_TABLES
) -> None:
    """Applies every rule to the run's staging tables, parents before children; idempotent per run."""
    warehouse.ensure_schemas(warehouse_uri)
    with warehouse.connect(warehouse_uri) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('pacbook.validate_staging'))")
        if conn.execute("select 1 from audit.staging_validation where run_id = %s limit 1", (run_id,)).fetchone():
            log.info("validation of run %s is already recorded; not repeated", run_id)
        else:
            may_have_lost_rows: set[str] = set()  # parents come before their children in `tables`
            for table in tables:
                if _validate_table(conn, run_id, table, as_of, tables, may_have_lost_rows):
                    may_have_lost_rows.add(table)


def _validate_table(
    conn, run_id: str, table: str, as_of: dt.datetime, tables: tuple[str, ...], may_have_lost_rows: set[str]
) -> bool:
    """Applies the table's rules; True when the table may have lost rows since its last validation."""
    staging = sql.Identifier("staging", table)
    conn.execute(
        sql.SQL(
            """
            create table if not exists {} (
                run_id text not null,
                rule text not null,
                reason text not null,
                source_row jsonb not null,
                quarantined_at timestamptz not null default clock_timestamp()
            )
            """
        ).format(sql.Identifier("quarantine", table))
    )
    scope = _scope(conn, table)
    checked, new_rows, validated_through = conn.execute(
        sql.SQL("select count(*), count(*) filter (where {}), {} from {} as t").format(
            scope.rows("t"), scope.last_load_checked(), staging
        )
    ).fetchone()
    rejected = new_rejected = 0
    for rule in rules_for(table):
        if rule.parent and rule.parent not in tables:
            log.info("rule %s.%s not applied: this extraction leaves out %s", table, rule.name, rule.parent)
            continue
        params = {"run_id": run_id, "rule": rule.name, "reason": rule.description, "as_of": as_of}
        moved = conn.execute(_quarantine_statement(rule, scope), params).rowcount
        new_rejected += moved
        if rule.parent in may_have_lost_rows and not scope.everything:
            # then the older rows, which only a parent that lost rows tonight can have orphaned
            moved += conn.execute(_quarantine_statement(rule, scope, every_row=True), params).rowcount
        if moved:
            rejected += moved
            conn.execute(
                "insert into audit.rejected_rows (run_id, source_name, rule, rejected_rows) values (%s, %s, %s, %s)",
                (run_id, table, rule.name, moved),
            )
    conn.execute(
        "insert into audit.staging_validation (run_id, table_name, rows_checked, rows_rejected, "
        "new_rows_checked, new_rows_rejected, validated_through) values (%s, %s, %s, %s, %s, %s, %s)",
        (run_id, table, checked, rejected, new_rows, new_rejected, validated_through),
    )
    if rejected:
        conn.execute(sql.SQL("analyze {}").format(staging))
    log.info(
        "validated table=%s rows_checked=%d new_rows_checked=%d new_rows_rejected=%d rows_rejected=%d",
        table,
        checked,
        new_rows,
        new_rejected,
        rejected,
    )
    return scope.everything or rejected > 0


def log_rejections(warehouse_uri: str, run_id: str) -> int:
    """One log line per table and rule that rejected rows in this run (the on-call engineer's view)."""
    with warehouse.connect(warehouse_uri) as conn:
        rows = conn.execute(
            "select source_name, rule, rejected_rows from audit.rejected_rows "
            "where run_id = %s and source_name = any(%s) order by source_name, rule",
            (run_id, list(config.SOURCE_TABLES)),
        ).fetchall()
    descriptions = {(rule.table, rule.name): rule.description for rule in RULES}
    for table, rule, count in rows:
        log.warning(
            "quarantined %d row(s) of %s: rule %s (%s) -> quarantine.%s",
            count,
            table,
            rule,
            descriptions.get((table, rule), "rule no longer declared"),
            table,
        )
    return sum(count for _, _, count in rows)


def validation_results(warehouse_uri: str, run_id: str) -> list[TableValidation]:
    with warehouse.connect(warehouse_uri) as conn:
        rows = conn.execute(
            # (runs validated before new_rows_* were recorded count every row as new)
            "select table_name, coalesce(new_rows_checked, rows_checked), coalesce(new_rows_rejected, rows_rejected), "
            "rows_rejected from audit.staging_validation "
            "where run_id = %s order by table_name",
            (run_id,),
        ).fetchall()
    return [TableValidation(*row) for row in rows]


def check_rejected_share(results: list[TableValidation], limit: float | None = None) -> None:
    limit = config.max_rejected_share() if limit is None else limit
    over = [r for r in results if r.new_rows_rejected and r.rejected_share > limit]
    if over:
        details = "; ".join(
            f"{r.table}: {r.new_rows_rejected} of {r.new_rows_checked} ({r.rejected_share:.1%})" for r in over
        )
        raise TooManyRejectedRowsError(
            f"rejected rows over the threshold of {limit:.1%} of the rows this run brought, per table: {details} "
            "— the rows and their rules are in quarantine.<table> (RUNBOOK.md#rejected-rows)"
        )


def forget_validation(warehouse_uri: str, run_id: str) -> None:
    """For a full refresh of a run: its quarantined rows and counts go, to be redone from a fresh copy."""
    with warehouse.connect(warehouse_uri) as conn, conn.transaction():
        tables = conn.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'quarantine' and table_name = any(%s)",
            (list(config.SOURCE_TABLES),),
        ).fetchall()
        for (table,) in tables:
            conn.execute(
                sql.SQL("delete from {} where run_id = %s").format(sql.Identifier("quarantine", table)), (run_id,)
            )
        conn.execute(
            "delete from audit.rejected_rows where run_id = %s and source_name = any(%s)",
            (run_id, list(config.SOURCE_TABLES)),
        )
        conn.execute("delete from audit.staging_validation where run_id = %s", (run_id,))
