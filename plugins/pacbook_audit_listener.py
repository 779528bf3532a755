"""Airflow plugin: records every task try's outcome into the warehouse's ``audit.task_run``.

Thin on purpose: the hooks hand over to ``include.pacbook.task_audit`` (where the table, the row and
the notes on which Airflow process runs which hook live). A hook never raises: auditing must not
fail or retry a task. Loaded from ``AIRFLOW__CORE__PLUGINS_FOLDER`` by every component and by the
task runner in the worker, which is where task outcomes are reported in Airflow 3.
"""

from __future__ import annotations

import logging
import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


def _record(task_instance, default_state: str, error=None) -> None:
    try:
        from include.pacbook.task_audit import record_from_task_instance

        record_from_task_instance(task_instance, default_state, error)
    except Exception:  # noqa: BLE001 - e.g. the project is not importable in this process
        log.exception("PacBook task audit listener failed (the task is not affected)")


@hookimpl
def on_task_instance_success(previous_state, task_instance):
    _record(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state, task_instance, error):
    _record(task_instance, "failed", error)


@hookimpl
def on_task_instance_skipped(previous_state, task_instance):
    _record(task_instance, "skipped")


class PacbookAuditListenerPlugin(AirflowPlugin):
    name = "pacbook_audit_listener"
    listeners = [sys.modules[__name__]]
