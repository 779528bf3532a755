"""Luigi tasks that ingest the publishers' price lists from the landing folder (docs/landing_zone.md).

One ``IngestLandingFile`` per file content (name + sha256): judge the lines, write the bronze Parquet
copy, load it into ``staging.publisher_book_costs`` with its bookmark in ``audit.landing_file``. The
task is complete when that content is the file's current version in the warehouse (or when the file
was rejected), so a rerun skips what is done and redoes only what a crash left behind.
The warehouse URI is a private, insignificant parameter: it never reaches Luigi's logs or task ids.
"""

from __future__ import annotations

import logging

import luigi
from luigi.execution_summary import LuigiStatusCode
from luigi.parameter import ParameterVisibility

from include.pacbook import config, landing_zone, warehouse

log = logging.getLogger("pacbook.landing")


class LandingFileTarget(luigi.Target):
    """Exists when this content is the file's current version in the warehouse, or was rejected and moved."""

    def __init__(self, warehouse_uri: str, file_name: str, sha256: str):
        self.warehouse_uri = warehouse_uri
        self.file_name = file_name
        self.sha256 = sha256

    def exists(self) -> bool:
        return landing_zone.is_current_version(
            self.warehouse_uri, self.file_name, self.sha256
        ) or landing_zone.was_rejected(self.warehouse_uri, self.file_name, self.sha256)


class IngestLandingFile(luigi.Task):
    file_name = luigi.Parameter(description="name of the file in the landing folder")
    sha256 = luigi.Parameter(description="checksum of the content seen when the file was listed")
    run_id = luigi.Parameter(significant=False, description="the pipeline run that ingests it (for the audit)")
    warehouse_uri = luigi.Parameter(significant=False, visibility=ParameterVisibility.PRIVATE)

    def output(self) -> LandingFileTarget:
        return LandingFileTarget(self.warehouse_uri, self.file_name, self.sha256)

    def run(self) -> None:
        path = config.landing_dir() / self.file_name
        if not path.exists():
            # a parallel run ingested or rejected it in the meantime; if it did not, the next run says so
            log.warning("landing file=%s vanished before it could be read; nothing to do", self.file_name)
            return
        data = path.read_bytes()
        sha256 = landing_zone.sha256_of(data)
        if sha256 != self.sha256:
            # replaced while we were looking: the new content is pending and the next run takes it
            log.warning("landing file=%s changed since it was listed; left for the next run", self.file_name)
            return
        try:
            price_list = landing_zone.read_price_list(self.file_name, data)
        except landing_zone.UnreadableLandingFileError as error:
            landing_zone.reject_landing_file(self.warehouse_uri, path, data, error.reason, self.run_id)
            return
        parquet_file = landing_zone.write_price_list_parquet(price_list)
        loaded = landing_zone.load_price_list(self.warehouse_uri, parquet_file, self.run_id)
        log.info(
            "landing file=%s version=%d rows_loaded=%d rows_quarantined=%d blank_lines=%d%s",
            loaded.file_name,
            loaded.file_version,
            loaded.rows_loaded,
            loaded.rows_quarantined,
            price_list.blank_lines,
            " (already loaded)" if loaded.already_loaded else "",
        )


_failures: dict[str, str] = {}


@IngestLandingFile.event_handler(luigi.Event.FAILURE)
def _remember_failure(task: IngestLandingFile, exception: BaseException) -> None:
    _failures[task.file_name] = f"{type(exception).__name__}: {exception}"


class LandingIngestFailedError(RuntimeError):
    """Luigi reported failures; the message names every failed file and why."""


def ingest_landing_zone(warehouse_uri: str, run_id: str) -> dict:
    """Ingests every pending landing file with Luigi; returns what this run did (``run_summary``).

    ``luigi.build`` returns True even when tasks failed (PITFALLS #14), so success is read from the
    detailed summary's status, and a failure raises naming the files and the reasons.
    """
    warehouse.ensure_schemas(warehouse_uri)
    pending = landing_zone.pending_landing_files(warehouse_uri)
    if not pending:
        log.info("landing zone: no new files in %s", config.landing_dir())
        return landing_zone.run_summary(warehouse_uri, run_id)
    tasks = [
        IngestLandingFile(
            file_name=path.name,
            sha256=landing_zone.sha256_of(path.read_bytes()),
            run_id=run_id,
            warehouse_uri=warehouse_uri,
        )
        for path in pending
    ]
    log.info("landing zone: %d file(s) to ingest: %s", len(tasks), ", ".join(task.file_name for task in tasks))
    _failures.clear()
    result = luigi.build(tasks, local_scheduler=True, detailed_summary=True, workers=1, log_level="INFO")
    log.info("luigi summary:\n%s", result.summary_text)
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        failed = {task.file_name: _failures.get(task.file_name) for task in tasks if not task.complete()}
        details = "; ".join(f"{name}: {reason or 'see the Luigi log above'}" for name, reason in failed.items())
        raise LandingIngestFailedError(
            f"landing zone: {len(failed)} file(s) not ingested [{', '.join(failed)}] "
            f"(luigi status {result.status.name}): {details} — see docs/landing_zone.md"
        )
    summary = landing_zone.run_summary(warehouse_uri, run_id)
    log.info(
        "landing zone: files_ingested=%d rows_loaded=%d rows_quarantined=%d files_rejected=%d",
        summary["files_ingested"],
        summary["rows_loaded"],
        summary["rows_quarantined"],
        summary["files_rejected"],
    )
    return summary
