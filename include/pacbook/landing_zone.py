"""Files in: publishers' price lists, from the landing folder to ``staging.publisher_book_costs``.

A landing file is ``book_costs_<publisher>_<YYYYMMDD>.csv`` with the header
``isbn13,unit_cost,currency,valid_from``. Each file goes through three steps, each safe to repeat:

1. ``read_price_list``: the bytes are read once, hashed (sha256) and judged line by line. A file that
   cannot be read as such a price list at all raises ``UnreadableLandingFileError`` and is moved to the
   rejected folder by ``reject_landing_file``; a bad line is only marked with its rule and reason.
2. ``write_price_list_parquet``: every line with its verdict goes to one Parquet file in the bronze
   folder, named by the content's checksum and written atomically (temp file + rename), so a crash
   leaves either no file or a whole one, and a file that does not read back whole is rewritten.
3. ``load_price_list``: from the Parquet file, good lines into staging, bad lines into quarantine, the
   counts into ``audit.rejected_rows`` and the bookmark into ``audit.landing_file`` - one transaction.

The bookmark is the file name plus the checksum of its current version: a file whose content equals
its current version is done; a different content under the same name is the next version and
replaces the previous version's rows in staging (bronze and the audit keep every version).
The rules are in docs/landing_zone.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from include.pacbook import config, warehouse

log = logging.getLogger("pacbook.landing")

HEADER = ("isbn13", "unit_cost", "currency", "valid_from")
FILE_NAME_PATTERN = re.compile(r"^book_costs_(?P<publisher>[a-z0-9][a-z0-9_-]*)_(?P<file_date>[0-9]{8})\.csv$")
FILE_NAME_FORMAT = "book_costs_<publisher>_<YYYYMMDD>.csv (publisher in lowercase letters, digits, '-' or '_')"

# The shop's order_line.price carries no currency; PacBook sells in US dollars, and the warehouse holds
# no exchange rates, so a cost in any other currency could not be set against a price.
SHOP_CURRENCY = "USD"
# The shop's prices are below 25.00; a unit cost of more than this is a typo (cents as dollars, an
# extra digit), not a price.
MAX_UNIT_COST = Decimal("1000")
UNIT_COST_DECIMALS = Decimal("0.0001")
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

# Every rule a line can break, in the order they are checked (the first one broken is recorded).
LINE_RULES = {
    "malformed_csv_line": "the line is not valid CSV (e.g. an unclosed quote)",
    "wrong_field_count": "the line does not hold exactly the 4 fields of the header",
    "invalid_isbn13": "isbn13 is not 13 digits (hyphens and spaces aside)",
    "unit_cost_not_a_number": "unit_cost is not a decimal number with a point",
    "unit_cost_not_positive": "unit_cost is 0 or negative",
    "unit_cost_absurd": f"unit_cost is above {MAX_UNIT_COST}",
    "unknown_currency": f"currency is not {SHOP_CURRENCY}, the one currency the warehouse prices in",
    "invalid_valid_from": "valid_from is not a date written YYYY-MM-DD",
    "future_valid_from": "valid_from is after the day the file is ingested",
    "duplicate_isbn13_valid_from": "an earlier line of the same file has the same isbn13 and valid_from",
}

PARQUET_SCHEMA = pa.schema(
    [
        pa.field("line_number", pa.int32(), nullable=False),
        pa.field("raw_line", pa.string(), nullable=False),
        pa.field("isbn13", pa.string()),
        pa.field("unit_cost", pa.decimal128(12, 4)),
        pa.field("currency", pa.string()),
        pa.field("valid_from", pa.date32()),
        pa.field("rule", pa.string()),
        pa.field("reason", pa.string()),
    ]
)
PARQUET_FORMAT_VERSION = "1"


class UnreadableLandingFileError(ValueError):
    """The file as a whole is not a price list; the message names the file (and line) and why."""

    def __init__(self, file_name: str, reason: str):
        super().__init__(f"{file_name}: {reason}")
        self.file_name = file_name
        self.reason = reason


@dataclass(frozen=True)
class LandingFileName:
    name: str
    publisher: str
    file_date: dt.date


@dataclass(frozen=True)
class PriceListLine:
    """One data line of a price list; ``rule`` is None for a good line, else the first rule it breaks."""

    line_number: int
    raw_line: str
    isbn13: str | None = None
    unit_cost: Decimal | None = None
    currency: str | None = None
    valid_from: dt.date | None = None
    rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PriceList:
    file: LandingFileName
    sha256: str
    size_bytes: int
    blank_lines: int
    lines: tuple[PriceListLine, ...]

    @property
    def good_lines(self) -> list[PriceListLine]:
        return [line for line in self.lines if line.rule is None]

    @property
    def bad_lines(self) -> list[PriceListLine]:
        return [line for line in self.lines if line.rule is not None]


@dataclass(frozen=True)
class LoadedFile:
    file_name: str
    file_version: int
    rows_loaded: int
    rows_quarantined: int
    already_loaded: bool


# --- the landing folder and bookmarks


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def landing_files(landing_dir: Path | None = None) -> list[Path]:
    """Every file the publishers put in the landing folder. Hidden files are uploads in progress
    (upload as ``.name.part``, then rename) and sub-folders (rejected/) are not landing files."""
    folder = landing_dir or config.landing_dir()
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def current_versions(warehouse_uri: str) -> dict[str, str]:
    """File name -> checksum of the version now in staging; empty on a warehouse never given a file."""
    with warehouse.connect(warehouse_uri) as conn:
        if conn.execute("select to_regclass('audit.landing_file') is null").fetchone()[0]:
            return {}
        rows = conn.execute(
            "select file_name, file_sha256 from audit.landing_file where superseded_at is null"
        ).fetchall()
    return dict(rows)


def pending_landing_files(warehouse_uri: str) -> list[Path]:
    """Landing files not ingested yet: new names, and known names whose content differs from the
    version in staging. Empty on a night without files (normal); the sensor asks this."""
    ingested = current_versions(warehouse_uri)
    return [path for path in landing_files() if ingested.get(path.name) != sha256_of(path.read_bytes())]


def is_current_version(warehouse_uri: str, file_name: str, sha256: str) -> bool:
    return current_versions(warehouse_uri).get(file_name) == sha256


def was_rejected(warehouse_uri: str, file_name: str, sha256: str) -> bool:
    """True when this content was rejected and is no longer waiting in the landing folder."""
    path = config.landing_dir() / file_name
    if path.exists() and sha256_of(path.read_bytes()) == sha256:
        return False  # recorded, but a crash came before the move: judge it again
    with warehouse.connect(warehouse_uri) as conn:
        if conn.execute("select to_regclass('audit.landing_file_rejection') is null").fetchone()[0]:
            return False
        found = conn.execute(
            "select 1 from audit.landing_file_rejection where file_name = %s and file_sha256 = %s limit 1",
            (file_name, sha256),
        ).fetchone()
    return found is not None


# --- step 1: read and judge a file


def parse_file_name(name: str) -> LandingFileName:
    match = FILE_NAME_PATTERN.match(name)
    if not match:
        raise UnreadableLandingFileError(name, f"bad file name: expected {FILE_NAME_FORMAT}")
    try:
        file_date = dt.datetime.strptime(match["file_date"], "%Y%m%d").date()
    except ValueError:
        raise UnreadableLandingFileError(
            name, f"bad file name: {match['file_date']!r} is not a calendar date YYYYMMDD"
        ) from None
    return LandingFileName(name=name, publisher=match["publisher"], file_date=file_date)


def _decode(name: str, data: bytes) -> str:
    if not data:
        raise UnreadableLandingFileError(name, "empty file (0 bytes)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableLandingFileError(
            name, "wrong encoding: UTF-16 (a spreadsheet 'Unicode text' export?); send UTF-8"
        )
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise UnreadableLandingFileError(name, f"line {line}: not a text CSV file (NUL bytes: binary content)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UnreadableLandingFileError(
            name, f"line {line}: wrong encoding: byte 0x{data[error.start]:02x} is not UTF-8; send UTF-8"
        ) from None


def _split_fields(line: str) -> list[str]:
    return next(csv.reader([line], strict=True))


def _check_header(name: str, header_line: str) -> None:
    try:
        fields = [field.strip().lower() for field in _split_fields(header_line)]
    except csv.Error as error:
        raise UnreadableLandingFileError(name, f"line 1: header is not CSV ({error})") from None
    if tuple(fields) != HEADER:
        hint = " (fields must be separated by commas)" if ";" in header_line or "\t" in header_line else ""
        raise UnreadableLandingFileError(
            name, f"line 1: header is {header_line[:200]!r}, expected {','.join(HEADER)!r}{hint}"
        )


def _judge_line(line_number: int, raw: str, as_of: dt.date, seen: dict[tuple[str, dt.date], int]) -> PriceListLine:
    def bad(rule: str, reason: str) -> PriceListLine:
        return PriceListLine(line_number=line_number, raw_line=raw, rule=rule, reason=reason)

    try:
        fields = _split_fields(raw)
    except csv.Error as error:
        return bad("malformed_csv_line", f"not valid CSV: {error}")
    if len(fields) != len(HEADER):
        return bad("wrong_field_count", f"{len(fields)} field(s), expected {len(HEADER)} ({','.join(HEADER)})")
    isbn_text, cost_text, currency_text, valid_from_text = (field.strip() for field in fields)

    # hyphens and spaces are how ISBNs are printed (978-0-14-044913-6); the digits are the ISBN
    isbn13 = re.sub(r"[-\s]", "", isbn_text)
    if not re.fullmatch(r"[0-9]{13}", isbn13):
        return bad("invalid_isbn13", f"isbn13 {isbn_text!r} is not 13 digits")

    if not _NUMBER.match(cost_text):
        return bad("unit_cost_not_a_number", f"unit_cost {cost_text!r} is not a number like 12.50")
    unit_cost = Decimal(cost_text)
    if unit_cost <= 0:
        return bad("unit_cost_not_positive", f"unit_cost {cost_text} is not above 0")
    if unit_cost > MAX_UNIT_COST:
        return bad("unit_cost_absurd", f"unit_cost {cost_text} is above {MAX_UNIT_COST}")

    currency = currency_text.upper()
    if currency != SHOP_CURRENCY:
        return bad("unknown_currency", f"currency {currency_text!r} is not {SHOP_CURRENCY}")

    try:
        if not _ISO_DATE.match(valid_from_text):
            raise ValueError
        valid_from = dt.date.fromisoformat(valid_from_text)
    except ValueError:
        return bad("invalid_valid_from", f"valid_from {valid_from_text!r} is not a date YYYY-MM-DD")
    if valid_from > as_of:
        return bad("future_valid_from", f"valid_from {valid_from} is after {as_of}, the day of ingestion")

    first = seen.setdefault((isbn13, valid_from), line_number)
    if first != line_number:
        return bad("duplicate_isbn13_valid_from", f"isbn13 {isbn13} valid_from {valid_from} already on line {first}")

    return PriceListLine(
        line_number=line_number,
        raw_line=raw,
        isbn13=isbn13,
        unit_cost=unit_cost.quantize(UNIT_COST_DECIMALS, rounding=ROUND_HALF_UP),
        currency=currency,
        valid_from=valid_from,
    )


def read_price_list(name: str, data: bytes, as_of: dt.date | None = None) -> PriceList:
    """Judges the bytes of the landing file ``name``. Raises ``UnreadableLandingFileError`` when the
    file as a whole is not a price list (bad name, empty, not UTF-8 text, wrong header, no rows)."""
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    file = parse_file_name(name)
    text = _decode(name, data)
    # split on \n only (and drop a \r before it): str.splitlines would also split inside a line on
    # form feeds and other separators, and line numbers must be the ones a text editor shows
    physical = [line.removesuffix("\r") for line in text.split("\n")]
    if physical and physical[-1] == "":
        physical.pop()  # the newline that ends the last line does not start another one
    if not any(line.strip() for line in physical):
        raise UnreadableLandingFileError(name, "no lines: the file holds only whitespace")
    if not physical[0].strip():
        raise UnreadableLandingFileError(name, "line 1: empty, expected the header " + ",".join(HEADER))
    _check_header(name, physical[0])

    lines, blank_lines, seen = [], 0, {}
    for line_number, raw in enumerate(physical[1:], start=2):
        if not raw.strip():
            blank_lines += 1  # no data in it; counted in audit.landing_file.blank_lines
            continue
        lines.append(_judge_line(line_number, raw, as_of, seen))
    if not lines:
        raise UnreadableLandingFileError(name, "header only: the file holds no price lines")
    return PriceList(
        file=file, sha256=sha256_of(data), size_bytes=len(data), blank_lines=blank_lines, lines=tuple(lines)
    )


# --- step 2: the bronze Parquet copy


def parquet_path(file_name: str, sha256: str) -> Path:
    """One Parquet file per file content: a rerun of the same content finds the same path."""
    return config.bronze_dir() / f"{Path(file_name).stem}.sha256-{sha256[:16]}.parquet"


def _parquet_metadata(price_list: PriceList) -> dict[bytes, bytes]:
    values = {
        "file_name": price_list.file.name,
        "file_sha256": price_list.sha256,
        "file_bytes": str(price_list.size_bytes),
        "publisher": price_list.file.publisher,
        "file_date": price_list.file.file_date.isoformat(),
        "blank_lines": str(price_list.blank_lines),
        "format_version": PARQUET_FORMAT_VERSION,
    }
    return {f"pacbook.{key}".encode(): value.encode() for key, value in values.items()}


def parquet_is_whole(path: Path, sha256: str) -> bool:
    """True when ``path`` reads back completely as this content's Parquet file in the current format."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return False
    metadata = table.schema.metadata or {}
    return (
        table.schema.remove_metadata().equals(PARQUET_SCHEMA)
        and metadata.get(b"pacbook.file_sha256") == sha256.encode()
        and metadata.get(b"pacbook.format_version") == PARQUET_FORMAT_VERSION.encode()
    )


def write_price_list_parquet(price_list: PriceList) -> Path:
    """Writes every line and its verdict to the bronze folder, atomically; keeps a whole file already there."""
    target = parquet_path(price_list.file.name, price_list.sha256)
    if target.exists() and parquet_is_whole(target, price_list.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):  # from a writer killed mid-write
        leftover.unlink(missing_ok=True)
    table = pa.Table.from_pylist(
        [
            {
                "line_number": line.line_number,
                "raw_line": line.raw_line,
                "isbn13": line.isbn13,
                "unit_cost": line.unit_cost,
                "currency": line.currency,
                "valid_from": line.valid_from,
                "rule": line.rule,
                "reason": line.reason,
            }
            for line in price_list.lines
        ],
        schema=PARQUET_SCHEMA.with_metadata(_parquet_metadata(price_list)),
    )
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary)
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, target)
    return target


def read_price_list_parquet(path: Path) -> tuple[dict[str, str], list[dict]]:
    table = pq.read_table(path)
    metadata = {
        key.decode().removeprefix("pacbook."): value.decode()
        for key, value in (table.schema.metadata or {}).items()
        if key.startswith(b"pacbook.")
    }
    return metadata, table.to_pylist()


# --- step 3: staging, quarantine, counts and bookmark in one transaction

_STAGING_COLUMNS = (
    "file_name",
    "file_version",
    "line_number",
    "publisher",
    "file_date",
    "isbn13",
    "unit_cost",
    "currency",
    "valid_from",
    "run_id",
)
_QUARANTINE_COLUMNS = ("run_id", "file_name", "file_version", "line_number", "rule", "reason", "raw_line")


def _copy_rows(conn, table: sql.Composable, columns: tuple[str, ...], rows: list[tuple]) -> None:
    statement = sql.SQL("copy {} ({}) from stdin").format(table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _next_version(conn, file_name: str) -> int:
    return conn.execute(
        "select coalesce(max(file_version), 0) + 1 from audit.landing_file where file_name = %s", (file_name,)
    ).fetchone()[0]


def _supersede_current_version(conn, file_name: str) -> None:
    """The new version replaces the old one's rows in staging; bronze and the audit keep the old one."""
    conn.execute(
        "update audit.landing_file set superseded_at = clock_timestamp() "
        "where file_name = %s and superseded_at is null",
        (file_name,),
    )
    conn.execute("delete from staging.publisher_book_costs where file_name = %s", (file_name,))


def _count_rejected_rows(conn, run_id: str, file_name: str, bad_rows: list[dict]) -> None:
    counts: dict[str, int] = {}
    for row in bad_rows:
        counts[row["rule"]] = counts.get(row["rule"], 0) + 1
    for rule, rows in sorted(counts.items()):
        # two versions of one file in one run add up: both sets of rows were rejected in that run
        conn.execute(
            """
            insert into audit.rejected_rows (run_id, source_name, rule, rejected_rows)
            values (%s, %s, %s, %s)
            on conflict (run_id, source_name, rule)
            do update set rejected_rows = audit.rejected_rows.rejected_rows + excluded.rejected_rows
            """,
            (run_id, file_name, rule, rows),
        )


def _record_landing_file(conn, run_id: str, version: int, path: Path, metadata: dict, loaded: int, bad: int) -> None:
    conn.execute(
        """
        insert into audit.landing_file (
            file_name, file_version, file_sha256, file_bytes, publisher, file_date, parquet_path,
            rows_loaded, rows_quarantined, blank_lines, run_id
        )
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            metadata["file_name"],
            version,
            metadata["file_sha256"],
            int(metadata["file_bytes"]),
            metadata["publisher"],
            dt.date.fromisoformat(metadata["file_date"]),
            str(path),
            loaded,
            bad,
            int(metadata["blank_lines"]),
            run_id,
        ),
    )


def load_price_list(warehouse_uri: str, parquet_file: Path, run_id: str) -> LoadedFile:
    """Loads one bronze Parquet file. Everything it writes commits together, so after a crash the
    file is either fully loaded and bookmarked or not at all; loading the current version again is a no-op."""
    metadata, rows = read_price_list_parquet(parquet_file)
    file_name, sha256 = metadata["file_name"], metadata["file_sha256"]
    good = [row for row in rows if row["rule"] is None]
    bad = [row for row in rows if row["rule"] is not None]
    with warehouse.connect(warehouse_uri) as conn, conn.transaction():
        # two runs ingesting the same file at once: the second waits, then finds the bookmark
        conn.execute("select pg_advisory_xact_lock(hashtext('pacbook.landing_file'), hashtext(%s))", (file_name,))
        current = conn.execute(
            "select file_version, file_sha256, rows_loaded, rows_quarantined from audit.landing_file "
            "where file_name = %s and superseded_at is null",
            (file_name,),
        ).fetchone()
        if current and current[1] == sha256:
            return LoadedFile(file_name, current[0], current[2], current[3], already_loaded=True)
        version = _next_version(conn, file_name)
        _supersede_current_version(conn, file_name)
        file_date = dt.date.fromisoformat(metadata["file_date"])
        _copy_rows(
            conn,
            sql.Identifier("staging", "publisher_book_costs"),
            _STAGING_COLUMNS,
            [
                (
                    file_name,
                    version,
                    row["line_number"],
                    metadata["publisher"],
                    file_date,
                    row["isbn13"],
                    row["unit_cost"],
                    row["currency"],
                    row["valid_from"],
                    run_id,
                )
                for row in good
            ],
        )
        _copy_rows(
            conn,
            sql.Identifier("quarantine", "publisher_book_costs"),
            _QUARANTINE_COLUMNS,
            [
                (run_id, file_name, version, row["line_number"], row["rule"], row["reason"], row["raw_line"])
                for row in bad
            ],
        )
        _count_rejected_rows(conn, run_id, file_name, bad)
        _record_landing_file(conn, run_id, version, parquet_file, metadata, len(good), len(bad))
    return LoadedFile(file_name, version, len(good), len(bad), already_loaded=False)


# --- files that are not price lists at all


def _reason_text(file_name: str, sha256: str, reason: str, run_id: str) -> str:
    return (
        f"file: {file_name}\n"
        f"sha256: {sha256}\n"
        f"rejected_at: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\n"
        f"run_id: {run_id}\n"
        f"reason: {reason}\n"
        "what to do: docs/landing_zone.md, 'A rejected file' - ask the publisher for a corrected file under "
        "the same name, or fix this copy and put it back into the landing folder.\n"
    )


def reject_landing_file(warehouse_uri: str, path: Path, data: bytes, reason: str, run_id: str) -> Path:
    """Moves a file that is not a price list to the rejected folder with a ``<name>.reason`` beside it,
    records it in ``audit.landing_file_rejection`` and returns where it went."""
    sha256 = sha256_of(data)
    folder = config.rejected_dir()
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / path.name
    if destination.exists() and sha256_of(destination.read_bytes()) != sha256:
        # an earlier, different rejected file of that name stays as the evidence it is
        destination = folder / f"{path.stem}.sha256-{sha256[:16]}{path.suffix}"
    reason_file = destination.with_name(destination.name + ".reason")
    temporary = reason_file.with_name(f".{reason_file.name}.tmp")
    temporary.write_text(_reason_text(path.name, sha256, reason, run_id), encoding="utf-8")
    os.replace(temporary, reason_file)
    with warehouse.connect(warehouse_uri) as conn:
        conn.execute(
            """
            insert into audit.landing_file_rejection (file_name, file_sha256, file_bytes, reason, moved_to, run_id)
            values (%s, %s, %s, %s, %s, %s)
            on conflict (file_name, file_sha256, run_id) do nothing
            """,
            (path.name, sha256, len(data), reason, str(destination), run_id),
        )
    # last: until the move, a crash leaves the file in the landing folder to be judged again
    shutil.move(path, destination)
    log.warning("landing file rejected: file=%s reason=%s moved_to=%s", path.name, reason, destination)
    return destination


# --- what a run did


def run_summary(warehouse_uri: str, run_id: str) -> dict:
    """Files ingested, rows loaded and quarantined, files rejected - by this run, from the audit tables."""
    with warehouse.connect(warehouse_uri) as conn:
        ingested = conn.execute(
            "select file_name, file_version, rows_loaded, rows_quarantined from audit.landing_file "
            "where run_id = %s order by file_name, file_version",
            (run_id,),
        ).fetchall()
        rejected = conn.execute(
            "select file_name, min(reason) from audit.landing_file_rejection where run_id = %s "
            "group by file_name, file_sha256 order by file_name",
            (run_id,),
        ).fetchall()
    return {
        "files_ingested": len(ingested),
        "rows_loaded": sum(row[2] for row in ingested),
        "rows_quarantined": sum(row[3] for row in ingested),
        "files_rejected": len(rejected),
        "ingested": [f"{name} (version {version})" for name, version, _, _ in ingested],
        "rejected": [f"{name}: {reason}" for name, reason in rejected],
    }
