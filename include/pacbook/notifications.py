"""Failure alerts of the PacBook DAG: what failed, where its log is, which runbook section applies.

Three ways in, one notice out (``FailureNotice``), sent by ``send_notice`` by e-mail (SMTP) and,
when configured, as JSON to a webhook:

* ``PacbookFailureNotifier()`` as a task's ``on_failure_callback`` / ``on_retry_callback``. In
  Airflow 3 task callbacks run in the task's own worker process (``finalize`` in the Task SDK's
  task runner), after the try's state is known: ``context["ti"].state`` is ``up_for_retry`` or
  ``failed`` there, and ``context["exception"]`` holds the error.
* ``notify_deadline_missed`` as the ``AsyncCallback`` of the DAG's ``DeadlineAlert``; it runs in the
  triggerer and receives ``context={"dag_run": {...}, "deadline": {...}}`` plus its kwargs.
* anything else that builds a ``FailureNotice`` itself (e.g. a dbt test report).

Sending never raises: an alert that cannot be delivered is logged with its reason and its full
content, so it is never lost silently and never hides the failure it reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from include.pacbook import config

log = logging.getLogger(__name__)

KINDS = ("task_failed", "retries_exhausted", "deadline_missed", "dbt_test_failed")
RUNBOOK_FILE = "RUNBOOK.md"
CAUSE_MAX_CHARS = 300
SEND_TIMEOUT_SECONDS = 10

# Markers of a failed dbt data test in the error text: dbt's own log line, and Cosmos's summary
# ("<test name>: Got 3 results, configured to fail if != 0").
_DBT_TEST_MARKERS = ("failure in test", "dbt test", "configured to fail if")


def one_line(text: str, limit: int = CAUSE_MAX_CHARS) -> str:
    """The first non-empty line of ``text``, stripped and cut to ``limit`` characters."""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 1] + "…"


def cause_of(error: BaseException | str | None, limit: int = CAUSE_MAX_CHARS) -> str:
    """ONE line: the exception's type and the first line of its message."""
    if error is None:
        return "unknown error (no exception was given)"
    if isinstance(error, BaseException):
        message = one_line(str(error), limit)
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    else:
        text = str(error)
    return one_line(text, limit) or "unknown error"


def runbook_section_for(task_id: str | None, error_text: str | None) -> str:
    """The anchor of RUNBOOK.md that tells the on-call engineer what to do about this failure."""
    task = (task_id or "").strip()
    error = (error_text or "").lower()
    if "deadline" in task.lower() or (not task and "deadline" in error):
        return "deadline-missed"
    if task == "source_ready" or "sensortimeout" in error or "sensor timeout" in error:
        return "source-not-ready"
    if task == "warehouse_free":
        return "warehouse-busy"
    if task == "extract":
        if "no longer matches" in error:
            return "schema-drift"
        return "rejected-rows" if "rejected rows over the threshold" in error else "extraction-failed"
    if task in ("landing_files", "ingest_landing_files"):
        return "landing-zone"
    if task == "reconcile":
        return "reconciliation-failed"
    if task in ("export_marts", "write_reports", "publish_dbt_docs"):
        return "publish-failed"
    if "." in task:  # a Cosmos dbt task: <layer>.<model>_model_build, or <layer>.layer_tests
        return "dbt-test-failed" if any(marker in error for marker in _DBT_TEST_MARKERS) else "dbt-model-failed"
    if task == "forecast":
        return "forecast-failed"
    return "general"


@dataclass(frozen=True)
class FailureNotice:
    dag_id: str
    run_id: str
    task_id: str | None
    try_number: int | None
    max_tries: int | None
    cause: str
    log_url: str
    runbook_section: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notice kind {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK_FILE}#{self.runbook_section}"

    @property
    def tries_text(self) -> str:
        if self.try_number is None:
            return "-"
        if self.max_tries is None:
            return str(self.try_number)
        return f"{self.try_number} of {self.max_tries + 1}"

    def headline(self) -> str:
        """What happened and its whole one-line cause (the cause is already cut to one line)."""
        what = {
            "task_failed": f"{self.task_id} failed",
            "retries_exhausted": f"{self.task_id} failed, retries exhausted",
            "dbt_test_failed": f"{self.task_id} dbt test failed",
            "deadline_missed": f"{self.dag_id} missed its deadline",
        }[self.kind]
        return f"[PacBook] {what}: {self.cause}"

    def subject(self) -> str:
        # A header: one line whatever the content.
        return one_line(self.headline(), 250)

    def body(self) -> str:
        lines = [
            f"Kind: {self.kind}",
            f"DAG: {self.dag_id}",
            f"Run: {self.run_id}",
            f"Task: {self.task_id or '(whole run)'}",
            f"Try: {self.tries_text}",
            f"Cause: {self.cause}",
            f"Log: {self.log_url}",
            f"Runbook: {self.runbook}",
        ]
        return "\n".join(lines) + "\n"

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "runbook": self.runbook, "subject": self.subject()}, sort_keys=True)


# --- sending ----------------------------------------------------------------------------------------


def _email(notice: FailureNotice) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = notice.subject()
    message["From"] = config.alert_email_from()
    message["To"] = ", ".join(config.alert_email_to())
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="pacbook.local")
    message["X-PacBook-Kind"] = notice.kind
    message["X-PacBook-Runbook"] = notice.runbook
    message.set_content(notice.body())
    return message


def _send_email(notice: FailureNotice) -> None:
    with smtplib.SMTP(config.smtp_host(), config.smtp_port(), timeout=SEND_TIMEOUT_SECONDS) as smtp:
        smtp.send_message(_email(notice))


def _post_webhook(notice: FailureNotice, url: str) -> None:
    request = urllib.request.Request(
        url, data=notice.as_json().encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as response:  # noqa: S310 - configured URL
        if not 200 <= response.status < 300:
            raise RuntimeError(f"webhook answered HTTP {response.status}")


def send_notice(notice: FailureNotice) -> dict[str, str]:
    """Sends the notice by e-mail and (when configured) to the webhook; never raises.

    Returns each channel's outcome ("sent" or "failed: <reason>") for the caller's log.
    """
    outcome: dict[str, str] = {}
    channels: list[tuple[str, Any]] = [("email", lambda: _send_email(notice))]
    url = config.alert_webhook_url()
    if url:
        channels.append(("webhook", lambda: _post_webhook(notice, url)))
    for name, send in channels:
        try:
            send()
            outcome[name] = "sent"
        except Exception as error:  # noqa: BLE001 - an alert must never mask the failure it reports
            reason = f"{type(error).__name__}: {error}"
            if isinstance(error, urllib.error.HTTPError):
                reason = f"HTTP {error.code} {error.reason}"
            outcome[name] = f"failed: {reason}"
            log.error("PacBook alert NOT delivered by %s (%s); the alert was: %s", name, reason, notice.as_json())
    if all(value == "sent" for value in outcome.values()):
        # Often the log's last line: whole, unlike the e-mail's subject, and with where to look next.
        log.info("PacBook alert sent (%s): %s | runbook: %s", ", ".join(outcome), notice.headline(), notice.runbook)
    return outcome


# --- building notices from Airflow ----------------------------------------------------------------


def _state_value(state: Any) -> str:
    return str(getattr(state, "value", state) or "").lower()


def task_log_url(ti: Any) -> str:
    """The task try's page in the Airflow UI (``ti.log_url`` when Airflow provides one)."""
    try:
        url = getattr(ti, "log_url", None)
    except Exception:  # noqa: BLE001 - the property reads Airflow's config; fall back to ours
        url = None
    if url:
        return str(url)
    run_id = quote(str(getattr(ti, "run_id", "")), safe="")
    url = f"{config.airflow_base_url()}/dags/{ti.dag_id}/runs/{run_id}/tasks/{ti.task_id}"
    map_index = getattr(ti, "map_index", None)
    if isinstance(map_index, int) and map_index >= 0:
        url += f"/mapped/{map_index}"
    try_number = getattr(ti, "try_number", None)
    if isinstance(try_number, int) and try_number > 0:
        url += f"?try_number={try_number}"
    return url


def run_url(dag_id: str, run_id: str) -> str:
    return f"{config.airflow_base_url()}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def notice_from_context(context: Any, kind: str | None = None) -> FailureNotice:
    """A notice from a task callback's context (``ti``, ``dag_run``, ``exception``).

    Without ``kind``: a try that Airflow will retry is ``task_failed``, the last one
    ``retries_exhausted``; a failed dbt data test is ``dbt_test_failed`` either way.
    """
    ti = context["ti"]
    dag_run = context.get("dag_run")
    error = context.get("exception")
    run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", "")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "")
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(ti, "max_tries", None)
    full_error = str(error) if error is not None else ""
    section = runbook_section_for(ti.task_id, f"{type(error).__name__ if error else ''} {full_error}")
    if kind is None:
        state = _state_value(getattr(ti, "state", None))
        if section == "dbt-test-failed":
            kind = "dbt_test_failed"
        elif state == "up_for_retry":
            kind = "task_failed"
        elif state == "failed":
            kind = "retries_exhausted"
        elif isinstance(try_number, int) and isinstance(max_tries, int) and try_number <= max_tries:
            kind = "task_failed"
        else:
            kind = "retries_exhausted"
    return FailureNotice(
        dag_id=str(dag_id),
        run_id=str(run_id),
        task_id=ti.task_id,
        try_number=try_number,
        max_tries=max_tries,
        cause=cause_of(error),
        log_url=task_log_url(ti),
        runbook_section=section,
        kind=kind,
    )


class PacbookFailureNotifier(BaseNotifier):
    """Alerts the on-call engineer about a failed task try (Airflow's notifier interface).

    ``on_failure_callback=PacbookFailureNotifier()`` and ``on_retry_callback=PacbookFailureNotifier()``;
    the kind (task_failed / retries_exhausted / dbt_test_failed) follows from the try's state unless
    given. Runs in the task's worker process; never raises (Airflow would only log it anyway).
    """

    template_fields = ()

    def __init__(self, kind: str | None = None):
        super().__init__()
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown notice kind {kind!r}")
        self.kind = kind

    def notify(self, context) -> None:
        try:
            notice = notice_from_context(context, self.kind)
        except Exception:  # noqa: BLE001 - a callback must not fail the run's bookkeeping
            log.exception("could not build the PacBook failure alert from the callback context")
            return
        send_notice(notice)


# --- deadline alerts (triggerer) -------------------------------------------------------------------


def _dag_run_fields(context: Any) -> dict[str, Any]:
    if not isinstance(context, dict):
        return {}
    dag_run = context.get("dag_run")
    if isinstance(dag_run, dict):
        return dag_run
    if dag_run is not None:  # an object, should a later Airflow pass the full context
        return {name: getattr(dag_run, name, None) for name in ("dag_id", "run_id", "state", "logical_date")}
    return {}


def deadline_notice(context: Any = None, **kwargs: Any) -> FailureNotice:
    """The notice for a missed deadline, from what the triggerer passes (see ``notify_deadline_missed``)."""
    dag_run = _dag_run_fields(context)
    deadline = context.get("deadline") if isinstance(context, dict) else None
    deadline = deadline if isinstance(deadline, dict) else {}
    dag_id = str(dag_run.get("dag_id") or kwargs.get("dag_id") or config.DAG_ID)
    run_id = str(dag_run.get("dag_run_id") or dag_run.get("run_id") or kwargs.get("run_id") or "unknown run")
    deadline_time = deadline.get("deadline_time") or kwargs.get("deadline_time")
    state = _state_value(dag_run.get("state")) or "unknown"
    cause = f"run not finished by its deadline {deadline_time or '(time unknown)'}; run state: {state}"
    if kwargs.get("reason"):
        cause = f"{kwargs['reason']}: {cause}"
    return FailureNotice(
        dag_id=dag_id,
        run_id=run_id,
        task_id=None,
        try_number=None,
        max_tries=None,
        cause=one_line(cause),
        log_url=run_url(dag_id, run_id),
        runbook_section="deadline-missed",
        kind="deadline_missed",
    )


async def notify_deadline_missed(context: dict | None = None, **kwargs: Any) -> str:
    """``AsyncCallback`` target of the DAG's ``DeadlineAlert``; runs in the triggerer.

    Airflow 3.3 calls it with ``context={"dag_run": <DAGRunResponse as JSON: dag_id, dag_run_id,
    state, logical_date, ...>, "deadline": {"id": ..., "deadline_time": ...}}`` plus the kwargs given
    to ``AsyncCallback``; other shapes are tolerated (kwargs ``dag_id``/``run_id`` as fallbacks).
    Returns each channel's outcome as one string ("email: sent; webhook: sent"): Airflow stores the
    return value in the text column ``callback.output``, and a dict there crashes the triggerer's
    runner loop (seen with 3.3.2: psycopg "cannot adapt type 'dict'").
    """
    log.info("deadline missed; callback context: %r; kwargs: %r", context, kwargs)
    try:
        notice = deadline_notice(context, **kwargs)
    except Exception as error:  # noqa: BLE001 - still alert, with what is known
        log.exception("could not read the deadline callback's context")
        notice = FailureNotice(
            dag_id=str(kwargs.get("dag_id") or config.DAG_ID),
            run_id="unknown run",
            task_id=None,
            try_number=None,
            max_tries=None,
            cause=cause_of(error),
            log_url=config.airflow_base_url(),
            runbook_section="deadline-missed",
            kind="deadline_missed",
        )
    outcome = await asyncio.to_thread(send_notice, notice)
    return "; ".join(f"{channel}: {result}" for channel, result in outcome.items())
