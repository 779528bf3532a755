"""Files in: publishers' price lists through real Luigi, real pyarrow and a real PostgreSQL warehouse.

What lands in staging (line for line), what is quarantined (file, line, rule, raw line), what is
rejected whole (moved, with a reason), versions and duplicates, reruns that change nothing, and
processes killed between the Parquet copy and the load that still ingest every file exactly once.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from include.luigi_tasks.landing_zone import LandingIngestFailedError, ingest_landing_zone
from include.pacbook import config, landing_zone, warehouse
from include.pacbook.publisher_files import (
    PriceRow,
    biggest_publishers,
    price_rows,
    unique_slugs,
    write_file_with_bad_lines,
    write_landing_file,
    write_price_list,
    write_publisher_files,
    write_unreadable_files,
)
from tests.conftest import query_all, query_one
from tests.landing.conftest import folder_state, landing_state

FILE_DATE = dt.date(2024, 3, 1)


def staged_rows(uri: str, file_name: str) -> dict[int, list]:
    rows = query_all(
        uri,
        "select line_number, isbn13, unit_cost, currency, valid_from, file_version "
        "from staging.publisher_book_costs where file_name = %s",
        (file_name,),
    )
    return {row[0]: list(row[1:]) for row in rows}


def expected_rows(generated, version: int = 1) -> dict[int, list]:
    return {
        line: [row.isbn13, row.unit_cost, row.currency, row.valid_from, version] for line, row in generated.rows.items()
    }


def test_two_files_load_line_for_line_with_parquet_copies_and_a_duplicate_changes_nothing(
    folders, warehouse_uri, catalogue
):
    first, second = write_publisher_files(folders.landing, catalogue, FILE_DATE, publishers=2)
    assert [path.name for path in landing_zone.pending_landing_files(warehouse_uri)] == sorted(
        [first.path.name, second.path.name]
    )

    summary = ingest_landing_zone(warehouse_uri, "night_1")

    assert summary["files_ingested"] == 2
    assert summary["rows_loaded"] == len(first.rows) + len(second.rows)
    assert (summary["rows_quarantined"], summary["files_rejected"]) == (0, 0)
    for generated in (first, second):
        assert staged_rows(warehouse_uri, generated.path.name) == expected_rows(generated)
        sha256 = hashlib.sha256(generated.path.read_bytes()).hexdigest()
        version, recorded_sha, parquet_file, loaded = query_one(
            warehouse_uri,
            "select file_version, file_sha256, parquet_path, rows_loaded from audit.landing_file where file_name = %s",
            (generated.path.name,),
        )
        assert (version, recorded_sha, loaded) == (1, sha256, len(generated.rows))
        # the bronze copy is real Parquet in the bronze folder, with every line of the file
        table = pq.read_table(parquet_file)
        assert parquet_file.startswith(str(folders.bronze))
        assert table.schema.metadata[b"pacbook.file_sha256"] == sha256.encode()
        bronze = {row["line_number"]: row for row in table.to_pylist()}
        assert {line: (row["isbn13"], row["unit_cost"], row["valid_from"]) for line, row in bronze.items()} == {
            line: (row.isbn13, row.unit_cost, row.valid_from) for line, row in generated.rows.items()
        }
    assert landing_zone.pending_landing_files(warehouse_uri) == []

    # a rerun of the same night, a later night, and the publisher sending the same file again
    before, files_before = landing_state(warehouse_uri), folder_state(folders.bronze, folders.landing)
    assert ingest_landing_zone(warehouse_uri, "night_1") == summary
    assert ingest_landing_zone(warehouse_uri, "night_2")["files_ingested"] == 0
    write_landing_file(first.path, first.path.read_bytes())
    assert landing_zone.pending_landing_files(warehouse_uri) == []
    assert ingest_landing_zone(warehouse_uri, "night_3") == {
        "files_ingested": 0,
        "rows_loaded": 0,
        "rows_quarantined": 0,
        "files_rejected": 0,
        "ingested": [],
        "rejected": [],
    }
    assert landing_state(warehouse_uri) == before
    assert folder_state(folders.bronze) == {k: v for k, v in files_before.items() if k.startswith(str(folders.bronze))}


def test_a_corrected_file_is_a_new_version_that_replaces_the_old_rows(folders, warehouse_uri, catalogue):
    first, second = write_publisher_files(folders.landing, catalogue, FILE_DATE, publishers=2)
    ingest_landing_zone(warehouse_uri, "night_1")
    second_before = query_all(
        warehouse_uri, "select * from staging.publisher_book_costs where file_name = %s", (second.path.name,)
    )

    # the publisher corrects the first list: one book dropped, one cost changed, same file name
    first_content = first.path.read_bytes()
    old_rows = list(first.rows.values())
    corrected_rows = [
        PriceRow(old_rows[0].isbn13, old_rows[0].unit_cost + Decimal("1.25"), "USD", old_rows[0].valid_from),
        *old_rows[2:],
    ]
    corrected = write_price_list(folders.landing, first.publisher_slug, FILE_DATE, corrected_rows)
    assert corrected.path == first.path
    assert landing_zone.pending_landing_files(warehouse_uri) == [first.path]

    summary = ingest_landing_zone(warehouse_uri, "night_2")

    assert (summary["files_ingested"], summary["rows_loaded"]) == (1, len(corrected_rows))
    assert summary["ingested"] == [f"{first.path.name} (version 2)"]
    assert staged_rows(warehouse_uri, first.path.name) == expected_rows(corrected, version=2)
    assert (
        query_all(warehouse_uri, "select * from staging.publisher_book_costs where file_name = %s", (second.path.name,))
        == second_before
    )
    versions = query_all(
        warehouse_uri,
        "select file_version, superseded_at is not null, run_id, parquet_path from audit.landing_file "
        "where file_name = %s order by file_version",
        (first.path.name,),
    )
    assert [row[:3] for row in versions] == [(1, True, "night_1"), (2, False, "night_2")]
    assert versions[0][3] != versions[1][3] and all(os.path.exists(row[3]) for row in versions), "bronze keeps both"

    # the landing folder holds the truth: the first content sent again under that name is version 3
    write_landing_file(first.path, first_content)
    assert landing_zone.pending_landing_files(warehouse_uri) == [first.path]
    assert ingest_landing_zone(warehouse_uri, "night_3")["ingested"] == [f"{first.path.name} (version 3)"]
    assert staged_rows(warehouse_uri, first.path.name) == expected_rows(first, version=3)


def test_bad_lines_are_quarantined_with_file_line_and_rule_and_good_lines_still_load(folders, warehouse_uri, catalogue):
    [group] = biggest_publishers(catalogue, 1)
    generated = write_file_with_bad_lines(
        folders.landing, "bad-lines-press", FILE_DATE, price_rows(group, random.Random(3), FILE_DATE)
    )
    assert set(generated.expected_rejections.values()) == set(landing_zone.LINE_RULES), "every rule is exercised"

    summary = ingest_landing_zone(warehouse_uri, "night_1")

    name = generated.path.name
    assert (summary["files_ingested"], summary["files_rejected"]) == (1, 0)
    assert summary["rows_loaded"] == len(generated.rows)
    assert summary["rows_quarantined"] == len(generated.expected_rejections)
    assert staged_rows(warehouse_uri, name) == expected_rows(generated)
    physical_lines = generated.path.read_bytes().decode().split("\r\n")
    quarantined = query_all(
        warehouse_uri,
        "select line_number, rule, raw_line, reason, run_id, file_version from quarantine.publisher_book_costs "
        "where file_name = %s order by line_number",
        (name,),
    )
    assert {line: rule for line, rule, *_ in quarantined} == generated.expected_rejections
    for line, _, raw_line, reason, run_id, version in quarantined:
        assert raw_line == physical_lines[line - 1]
        assert reason and (run_id, version) == ("night_1", 1)
    counts = dict(
        query_all(
            warehouse_uri,
            "select rule, rejected_rows from audit.rejected_rows where run_id = 'night_1' and source_name = %s",
            (name,),
        )
    )
    assert counts == dict(collections.Counter(generated.expected_rejections.values()))
    assert query_one(warehouse_uri, "select blank_lines from audit.landing_file where file_name = %s", (name,)) == (1,)

    before = landing_state(warehouse_uri)
    ingest_landing_zone(warehouse_uri, "night_1")
    ingest_landing_zone(warehouse_uri, "night_2")
    assert landing_state(warehouse_uri) == before


def test_unreadable_files_are_moved_to_rejected_with_a_reason_and_logged(folders, warehouse_uri, catalogue, caplog):
    groups = biggest_publishers(catalogue, 6)
    slugs = unique_slugs(groups)
    good = write_price_list(folders.landing, slugs[0], FILE_DATE, price_rows(groups[0], random.Random(1), FILE_DATE))
    unreadable = write_unreadable_files(folders.landing, slugs[1:], FILE_DATE, groups[0][0].isbn13)
    header_only = write_landing_file(
        folders.landing / f"book_costs_header-only_{FILE_DATE:%Y%m%d}.csv", b"isbn13,unit_cost,currency,valid_from\n"
    )
    not_csv = write_landing_file(
        folders.landing / f"book_costs_zipped_{FILE_DATE:%Y%m%d}.csv",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00price_list.csv",
    )
    bad_date = write_landing_file(folders.landing / "book_costs_acme_20241345.csv", good.path.read_bytes())
    expected = {generated.path.name: generated.expected_file_rejection for generated in unreadable}
    expected |= {header_only.name: "header only", not_csv.name: "not a text CSV", bad_date.name: "calendar date"}
    contents = {name: (folders.landing / name).read_bytes() for name in expected}

    with caplog.at_level(logging.WARNING, logger="pacbook.landing"):
        summary = ingest_landing_zone(warehouse_uri, "night_1")

    assert (summary["files_ingested"], summary["files_rejected"]) == (1, len(expected))
    assert sorted(line.split(":")[0] for line in summary["rejected"]) == sorted(expected)
    recorded = dict(query_all(warehouse_uri, "select file_name, reason from audit.landing_file_rejection"))
    for name, words in expected.items():
        assert not (folders.landing / name).exists()
        assert (folders.rejected / name).read_bytes() == contents[name], f"{name} moved, untouched"
        reason_file = (folders.rejected / f"{name}.reason").read_text()
        assert f"file: {name}" in reason_file and words in reason_file and words in recorded[name]
        assert any(name in record.getMessage() and words in record.getMessage() for record in caplog.records), name
    assert query_one(
        warehouse_uri, "select count(*) from staging.publisher_book_costs where file_name <> %s", (good.path.name,)
    ) == (0,)
    assert landing_zone.pending_landing_files(warehouse_uri) == []

    before = landing_state(warehouse_uri)
    assert ingest_landing_zone(warehouse_uri, "night_1") == summary
    assert landing_state(warehouse_uri) == before

    # the same broken file sent again is rejected again, and the rejected folder keeps one copy
    empty_name = next(name for name, words in expected.items() if words == "empty")
    write_landing_file(folders.landing / empty_name, b"")
    assert ingest_landing_zone(warehouse_uri, "night_2")["rejected"] == [f"{empty_name}: empty file (0 bytes)"]
    assert sorted(p.name for p in folders.rejected.iterdir() if p.name.startswith(empty_name)) == [
        empty_name,
        f"{empty_name}.reason",
    ]


def test_a_night_without_files_is_normal_and_staging_exists_for_dbt(folders, warehouse_uri):
    shutil.rmtree(folders.landing)
    assert landing_zone.pending_landing_files(warehouse_uri) == []  # before any bookkeeping table exists
    summary = ingest_landing_zone(warehouse_uri, "quiet_night")
    assert (summary["files_ingested"], summary["rows_loaded"], summary["files_rejected"]) == (0, 0, 0)
    assert query_one(warehouse_uri, "select count(*) from staging.publisher_book_costs") == (0,)
    assert query_one(warehouse_uri, "select count(*) from quarantine.publisher_book_costs") == (0,)
    warehouse.ensure_schemas(warehouse_uri)  # the DDL is idempotent


def test_a_damaged_parquet_copy_is_rewritten_before_the_load(folders, warehouse_uri, catalogue):
    [generated] = write_publisher_files(folders.landing, catalogue, FILE_DATE, publishers=1)
    sha256 = hashlib.sha256(generated.path.read_bytes()).hexdigest()
    target = landing_zone.parquet_path(generated.path.name, sha256)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PAR1 half a file")  # e.g. left by a copy tool, or a disk that filled up
    leftover = target.with_name(f".{target.name}.12345.tmp")
    leftover.write_bytes(b"PAR1")

    ingest_landing_zone(warehouse_uri, "night_1")

    assert landing_zone.parquet_is_whole(target, sha256)
    assert not leftover.exists()
    assert staged_rows(warehouse_uri, generated.path.name) == expected_rows(generated)


CRASH_SCRIPT = """
import os, signal, sys
from include.pacbook import landing_zone
from include.luigi_tasks.landing_zone import ingest_landing_zone

def killed_here(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

setattr(landing_zone, sys.argv[2], killed_here)
ingest_landing_zone(sys.argv[1], "crashed_night")
"""


@pytest.mark.parametrize(
    "kill_point",
    [
        "load_price_list",  # after the Parquet copy is written, before the load starts
        "_record_landing_file",  # inside the load transaction: staging and quarantine written, not committed
    ],
)
def test_a_process_killed_between_parquet_and_load_ingests_every_file_exactly_once(
    folders, warehouse_uri, catalogue, kill_point
):
    [good] = write_publisher_files(folders.landing, catalogue, FILE_DATE, publishers=1)
    [group] = biggest_publishers(catalogue, 2)[1:]
    bad = write_file_with_bad_lines(
        folders.landing, "second-press", FILE_DATE, price_rows(group, random.Random(5), FILE_DATE)
    )

    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, warehouse_uri, kill_point],
        env={**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    assert list(folders.bronze.glob("*.parquet")), "killed after the Parquet copy was written"
    assert query_one(warehouse_uri, "select count(*) from staging.publisher_book_costs") == (0,)
    assert query_one(warehouse_uri, "select count(*) from quarantine.publisher_book_costs") == (0,)
    assert query_one(warehouse_uri, "select count(*) from audit.landing_file") == (0,)
    assert query_one(warehouse_uri, "select count(*) from audit.rejected_rows") == (0,)
    assert sorted(landing_zone.pending_landing_files(warehouse_uri)) == sorted([good.path, bad.path])

    summary = ingest_landing_zone(warehouse_uri, "crashed_night")  # the retry

    assert summary["files_ingested"] == 2
    assert staged_rows(warehouse_uri, good.path.name) == expected_rows(good)
    assert staged_rows(warehouse_uri, bad.path.name) == expected_rows(bad)
    assert (
        dict(
            query_all(
                warehouse_uri,
                "select line_number, rule from quarantine.publisher_book_costs where file_name = %s",
                (bad.path.name,),
            )
        )
        == bad.expected_rejections
    )
    assert query_one(warehouse_uri, "select sum(rejected_rows) from audit.rejected_rows") == (
        len(bad.expected_rejections),
    )
    assert query_all(warehouse_uri, "select file_name, file_version from audit.landing_file order by 1") == [
        (bad.path.name, 1),
        (good.path.name, 1),
    ]
    assert len(list(folders.bronze.glob("*.parquet"))) == 2
    before = landing_state(warehouse_uri)
    ingest_landing_zone(warehouse_uri, "crashed_night")
    assert landing_state(warehouse_uri) == before


def test_a_failed_load_names_the_file_and_reason_keeps_the_file_pending_and_hides_the_password(
    folders, warehouse_uri, catalogue, caplog
):
    [generated] = write_publisher_files(folders.landing, catalogue, FILE_DATE, publishers=1)
    warehouse.ensure_schemas(warehouse_uri)
    # the staging table drifted from what the loader writes (someone narrowed a column by hand)
    with warehouse.connect(warehouse_uri) as conn:
        conn.execute("alter table staging.publisher_book_costs alter column currency type varchar(2)")

    with caplog.at_level(logging.INFO), pytest.raises(LandingIngestFailedError) as failure:
        ingest_landing_zone(warehouse_uri, "night_1")

    message = str(failure.value)
    assert generated.path.name in message and "StringDataRightTruncation" in message, message
    assert query_one(warehouse_uri, "select count(*) from audit.landing_file") == (0,)
    assert landing_zone.pending_landing_files(warehouse_uri) == [generated.path]
    password = config.connection_parts(warehouse_uri).password
    assert password and password not in caplog.text and password not in message


def test_the_generator_cli_writes_files_that_ingestion_judges_as_announced(
    folders, warehouse_uri, catalogue, generated_source, tmp_path
):
    cli = subprocess.run(
        [sys.executable, "-m", "include.pacbook.publisher_files", "--out", str(folders.landing)]
        + ["--source-uri", generated_source, "--date", "20240301", "--publishers", "2", "--malformed"],
        env={**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    # the same call as a function, elsewhere: the same bytes (seeded), and what each file must become
    announced = write_publisher_files(tmp_path / "expected", catalogue, FILE_DATE, publishers=2, malformed=True)
    assert {p.name: p.read_bytes() for p in folders.landing.iterdir()} == {
        g.path.name: g.path.read_bytes() for g in announced
    }

    summary = ingest_landing_zone(warehouse_uri, "make_run")

    loadable = [g for g in announced if g.expected_file_rejection is None]
    rejected = [g for g in announced if g.expected_file_rejection is not None]
    assert summary["files_ingested"] == len(loadable) == 3
    assert summary["files_rejected"] == len(rejected) == 5
    for generated in loadable:
        assert staged_rows(warehouse_uri, generated.path.name) == expected_rows(generated)
        assert (
            dict(
                query_all(
                    warehouse_uri,
                    "select line_number, rule from quarantine.publisher_book_costs where file_name = %s",
                    (generated.path.name,),
                )
            )
            == generated.expected_rejections
        )
    assert sorted(p.name for p in folders.rejected.glob("*.reason")) == sorted(
        f"{g.path.name}.reason" for g in rejected
    )
