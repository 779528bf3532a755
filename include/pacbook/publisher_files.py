"""Writes realistic publisher price lists into a landing folder, for real books of a PacBook database.

    python -m include.pacbook.publisher_files --out DIR [--source-uri URI] [--schema public|staging]
                                              [--publishers 3] [--date YYYYMMDD] [--seed 42] [--malformed]

The books (ISBN, publisher, average price paid) come from the ``book``, ``publisher`` and ``order_line``
tables of the given schema: the PacBook source (``public``) or a warehouse (``staging``). The biggest
publishers each send one file listing their books with a unit cost of 35-70% of the average price paid
(2.00-12.00 for books never sold), in US dollars, valid from the first of a month; about a quarter of
the books have a later second row (a price change). With ``--malformed`` the folder also gets a file
with bad lines (one per rule, the rule of each line known) and files the ingestion must reject whole.
Files are written as hidden temporary files and renamed, the upload protocol the landing folder expects.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

from include.pacbook import config
from include.pacbook.landing_zone import HEADER, SHOP_CURRENCY

FIRST_VALID_FROM = dt.date(2020, 1, 1)


@dataclass(frozen=True)
class CatalogueBook:
    book_id: int
    isbn13: str
    publisher_id: int
    publisher_name: str
    average_price: Decimal | None


@dataclass(frozen=True)
class PriceRow:
    isbn13: str
    unit_cost: Decimal
    currency: str
    valid_from: dt.date


@dataclass
class GeneratedFile:
    """A written landing file and what ingestion must make of it."""

    path: Path
    publisher_slug: str
    # good lines: line number -> the row as it must arrive in staging
    rows: dict[int, PriceRow] = field(default_factory=dict)
    # bad lines: line number -> the rule they break
    expected_rejections: dict[int, str] = field(default_factory=dict)
    # set for a file that must be rejected whole: a word the rejection reason contains
    expected_file_rejection: str | None = None


def read_catalogue(uri: str, schema: str = "public") -> list[CatalogueBook]:
    """Books with a usable ISBN (the source lost leading zeros of some: padded back to 13 digits,
    as a publisher writes them) and the average price PacBook got for each."""
    query = sql.SQL(
        """
        with sales as (
            select book_id, avg(price) as average_price
            from {order_line}
            group by book_id
        )
        select
            book.book_id,
            lpad(btrim(book.isbn13), 13, '0') as isbn13,
            publisher.publisher_id,
            publisher.publisher_name,
            round(sales.average_price, 2) as average_price
        from {book} as book
        inner join {publisher} as publisher on book.publisher_id = publisher.publisher_id
        left join sales on book.book_id = sales.book_id
        where btrim(book.isbn13) ~ '^[0-9]{{1,13}}$'
        order by book.book_id
        """
    ).format(
        order_line=sql.Identifier(schema, "order_line"),
        book=sql.Identifier(schema, "book"),
        publisher=sql.Identifier(schema, "publisher"),
    )
    with psycopg.connect(uri, connect_timeout=10) as conn:
        return [CatalogueBook(*row) for row in conn.execute(query).fetchall()]


def publisher_slug(name: str) -> str:
    """The publisher's part of a file name: ASCII lowercase words joined by '-' ("Éditions d'Art" -> editions-d-art)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:40].strip("-") or "publisher"


def file_name_for(slug: str, file_date: dt.date) -> str:
    return f"book_costs_{slug}_{file_date:%Y%m%d}.csv"


def _first_of_a_month(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    months = (end.year - start.year) * 12 + end.month - start.month
    offset = rng.randint(0, max(months, 0))
    year, month = divmod(start.year * 12 + start.month - 1 + offset, 12)
    return dt.date(year, month + 1, 1)


def price_rows(books: Iterable[CatalogueBook], rng: random.Random, file_date: dt.date) -> list[PriceRow]:
    """A publisher's price list: each book's unit cost from a valid_from, sometimes a later change."""
    rows, listed = [], set()
    last_start = min(file_date, dt.date.today())
    for book in books:
        if book.isbn13 in listed:  # two catalogue entries with one ISBN: a publisher lists it once
            continue
        listed.add(book.isbn13)
        if book.average_price:
            cost = Decimal(str(book.average_price)) * Decimal(str(round(rng.uniform(0.35, 0.70), 2)))
        else:
            cost = Decimal(str(round(rng.uniform(2.0, 12.0), 2)))
        cost = max(cost.quantize(Decimal("0.01")), Decimal("0.01"))
        valid_from = _first_of_a_month(rng, FIRST_VALID_FROM, last_start)
        rows.append(PriceRow(book.isbn13, cost, SHOP_CURRENCY, valid_from))
        if rng.random() < 0.25 and valid_from < last_start.replace(day=1):
            changed_from = _first_of_a_month(rng, valid_from.replace(day=28) + dt.timedelta(days=4), last_start)
            changed = (cost * Decimal(str(round(rng.uniform(0.9, 1.15), 2)))).quantize(Decimal("0.01"))
            rows.append(PriceRow(book.isbn13, max(changed, Decimal("0.01")), SHOP_CURRENCY, changed_from))
    return sorted(rows, key=lambda row: (row.isbn13, row.valid_from))


def csv_line(row: PriceRow) -> str:
    return f"{row.isbn13},{row.unit_cost},{row.currency},{row.valid_from.isoformat()}"


def write_landing_file(path: Path, content: bytes) -> Path:
    """Writes under a hidden name, then renames: the landing folder never shows half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return path


def write_price_list(out_dir: Path, slug: str, file_date: dt.date, rows: Sequence[PriceRow]) -> GeneratedFile:
    lines = [",".join(HEADER), *(csv_line(row) for row in rows)]
    path = write_landing_file(out_dir / file_name_for(slug, file_date), ("\n".join(lines) + "\n").encode())
    return GeneratedFile(path, slug, rows={number: row for number, row in enumerate(rows, start=2)})


def write_file_with_bad_lines(
    out_dir: Path, slug: str, file_date: dt.date, rows: Sequence[PriceRow], today: dt.date | None = None
) -> GeneratedFile:
    """A price list from a spreadsheet gone wrong: good rows, one bad line per rule, a blank line, and
    good rows written the way people write them (hyphenated ISBN, lowercase currency, CRLF)."""
    today = today or dt.datetime.now(dt.UTC).date()
    if len(rows) < 4:
        raise ValueError(f"{slug}: need at least 4 rows to build a file with bad lines, got {len(rows)}")
    first, second, third, *rest = rows
    hyphenated = f"{third.isbn13[:3]}-{third.isbn13[3]}-{third.isbn13[4:8]}-{third.isbn13[8:12]}-{third.isbn13[12]}"
    lines: list[tuple[str, PriceRow | None, str | None]] = [
        (csv_line(first), first, None),
        (f'{second.isbn13},"{second.unit_cost},{second.currency},{second.valid_from}', None, "malformed_csv_line"),
        (f"{second.isbn13},{second.unit_cost},{second.currency}", None, "wrong_field_count"),
        (f"{second.isbn13[:12]},{second.unit_cost},{second.currency},{second.valid_from}", None, "invalid_isbn13"),
        (f"ISBN{second.isbn13[4:]}X,{second.unit_cost},{second.currency},{second.valid_from}", None, "invalid_isbn13"),
        (f"{hyphenated},{third.unit_cost},{third.currency.lower()},{third.valid_from}", third, None),
        ("", None, None),
        (
            f'{second.isbn13},"{str(second.unit_cost).replace(".", ",")}",USD,{second.valid_from}',
            None,
            "unit_cost_not_a_number",
        ),
        (f"{second.isbn13},n/a,USD,{second.valid_from}", None, "unit_cost_not_a_number"),
        (f"{second.isbn13},-{second.unit_cost},USD,{second.valid_from}", None, "unit_cost_not_positive"),
        (f"{second.isbn13},0.00,USD,{second.valid_from}", None, "unit_cost_not_positive"),
        (f"{second.isbn13},125000.00,USD,{second.valid_from}", None, "unit_cost_absurd"),
        (f"{second.isbn13},{second.unit_cost},EUR,{second.valid_from}", None, "unknown_currency"),
        (f"{second.isbn13},{second.unit_cost},USD,{second.valid_from:%d/%m/%Y}", None, "invalid_valid_from"),
        (f"{second.isbn13},{second.unit_cost},USD,2023-02-30", None, "invalid_valid_from"),
        (f"{second.isbn13},{second.unit_cost},USD,{today + dt.timedelta(days=400)}", None, "future_valid_from"),
        (f"{first.isbn13},{first.unit_cost + 1},USD,{first.valid_from}", None, "duplicate_isbn13_valid_from"),
        *((csv_line(row), row, None) for row in rest),
    ]
    generated = GeneratedFile(out_dir / file_name_for(slug, file_date), slug)
    for number, (_, row, rule) in enumerate(lines, start=2):
        if row is not None:
            generated.rows[number] = row
        if rule is not None:
            generated.expected_rejections[number] = rule
    text = "\r\n".join([",".join(HEADER), *(line for line, _, _ in lines)]) + "\r\n"
    write_landing_file(generated.path, text.encode())
    return generated


def write_unreadable_files(out_dir: Path, slugs: Sequence[str], file_date: dt.date, isbn13: str) -> list[GeneratedFile]:
    """Files that are not price lists at all, as they arrive in real life; each must be rejected whole."""
    if len(slugs) < 5:
        raise ValueError("need 5 publisher slugs for the unreadable files")
    row = f"{isbn13},7.50,USD,2024-01-01"
    cases = [
        (
            file_name_for(slugs[0], file_date),
            ("isbn13;unit_cost;currency;valid_from\n" + row.replace(",", ";") + "\n").encode(),
            "header",
        ),
        (
            file_name_for(slugs[1], file_date),
            f'isbn13,unit_cost,currency,valid_from\n{isbn13},"7,50 €",EUR,2024-01-01\n'.encode("cp1252"),
            "encoding",
        ),
        (file_name_for(slugs[2], file_date), b"", "empty"),
        (
            file_name_for(slugs[3], file_date),
            ("isbn13,unit_cost,currency,valid_from\n" + row + "\n").encode("utf-16"),
            "encoding",
        ),
        (
            f"book costs {slugs[4]} {file_date:%Y-%m-%d}.csv",
            ("isbn13,unit_cost,currency,valid_from\n" + row + "\n").encode(),
            "file name",
        ),
    ]
    files = []
    for name, content, hint in cases:
        path = write_landing_file(out_dir / name, content)
        files.append(GeneratedFile(path, publisher_slug(name), expected_file_rejection=hint))
    return files


def biggest_publishers(books: Sequence[CatalogueBook], count: int) -> list[list[CatalogueBook]]:
    """The ``count`` publishers with the most books (ties by id), each with its books by book_id."""
    by_publisher: dict[int, list[CatalogueBook]] = {}
    for book in books:
        by_publisher.setdefault(book.publisher_id, []).append(book)
    ranked = sorted(by_publisher.values(), key=lambda group: (-len(group), group[0].publisher_id))
    return ranked[:count]


def write_publisher_files(
    out_dir: Path,
    books: Sequence[CatalogueBook],
    file_date: dt.date,
    publishers: int = 3,
    seed: int = 42,
    malformed: bool = False,
) -> list[GeneratedFile]:
    """One good price list per big publisher; with ``malformed``, also a file with bad lines and the
    files that must be rejected whole (from the next publishers in size)."""
    rng = random.Random(seed)
    wanted = publishers + (6 if malformed else 0)
    groups = biggest_publishers(books, wanted)
    if len(groups) < wanted:
        raise ValueError(f"the catalogue has only {len(groups)} publishers with usable ISBNs, {wanted} needed")
    slugs = unique_slugs(groups)
    files = [
        write_price_list(out_dir, slug, file_date, price_rows(group, rng, file_date))
        for slug, group in zip(slugs[:publishers], groups[:publishers], strict=True)
    ]
    if malformed:
        bad_rows_slug, *unreadable_slugs = slugs[publishers:]
        rows = price_rows(groups[publishers], rng, file_date)
        files.append(write_file_with_bad_lines(out_dir, bad_rows_slug, file_date, rows))
        files += write_unreadable_files(out_dir, unreadable_slugs, file_date, groups[publishers + 1][0].isbn13)
    return files


def unique_slugs(groups: Sequence[Sequence[CatalogueBook]]) -> list[str]:
    """One file-name slug per publisher; publisher names repeat across ids, so a repeat gets its id."""
    slugs: list[str] = []
    for group in groups:
        slug = publisher_slug(group[0].publisher_name)
        slugs.append(f"{slug}-{group[0].publisher_id}" if slug in slugs else slug)
    return slugs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder to write to (default: the landing folder)")
    parser.add_argument("--source-uri", default=None, help="database with the books (default: the source connection)")
    parser.add_argument("--schema", default="public", help="schema of book/publisher/order_line (public or staging)")
    parser.add_argument("--publishers", type=int, default=3)
    parser.add_argument("--date", default=None, help="the files' date YYYYMMDD (default: today)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--malformed", action="store_true", help="also write a file with bad lines and unreadable files"
    )
    args = parser.parse_args(argv)
    file_date = dt.datetime.strptime(args.date, "%Y%m%d").date() if args.date else dt.date.today()
    books = read_catalogue(args.source_uri or config.source_uri(), args.schema)
    out_dir = args.out or config.landing_dir()
    for generated in write_publisher_files(out_dir, books, file_date, args.publishers, args.seed, args.malformed):
        print(f"{generated.path}  good_lines={len(generated.rows)} bad_lines={len(generated.expected_rejections)}")


if __name__ == "__main__":
    main()
