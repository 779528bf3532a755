"""Fixtures of the landing-zone tests: private landing/bronze/rejected folders, a warehouse, real books."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from include.pacbook.publisher_files import CatalogueBook, read_catalogue
from tests.conftest import query_all


@dataclass(frozen=True)
class Folders:
    landing: Path
    bronze: Path
    rejected: Path


@pytest.fixture
def folders(tmp_path, monkeypatch) -> Folders:
    """The three folders of the landing zone, set the way production sets them (config reads the env)."""
    found = Folders(landing=tmp_path / "landing", bronze=tmp_path / "bronze", rejected=tmp_path / "rejected")
    found.landing.mkdir()
    monkeypatch.setenv("PACBOOK_LANDING_DIR", str(found.landing))
    monkeypatch.setenv("PACBOOK_BRONZE_DIR", str(found.bronze))
    monkeypatch.setenv("PACBOOK_REJECTED_DIR", str(found.rejected))
    return found


@pytest.fixture
def warehouse_uri(postgres) -> str:
    return postgres.fresh_database("warehouse_landing")


@pytest.fixture(scope="session")
def catalogue(generated_source) -> list[CatalogueBook]:
    """The generated source's books: the price lists name real ISBNs."""
    return read_catalogue(generated_source)


def landing_state(uri: str) -> dict[str, list[tuple]]:
    """Everything ingestion writes to the warehouse, timestamps included, to show a rerun touches nothing."""
    tables = {
        "staging": "select * from staging.publisher_book_costs order by file_name, line_number",
        "quarantine": "select * from quarantine.publisher_book_costs order by file_name, file_version, line_number",
        "landing_file": "select * from audit.landing_file order by file_name, file_version",
        "rejection": "select * from audit.landing_file_rejection order by file_name, rejected_at",
        "rejected_rows": "select * from audit.rejected_rows order by run_id, source_name, rule",
    }
    return {name: query_all(uri, query) for name, query in tables.items()}


def folder_state(*folders: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime_ns) of every file under the folders."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for folder in folders
        if folder.exists()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
