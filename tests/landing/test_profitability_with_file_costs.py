"""A real `dbt build` of marts.profitability after a price list was ingested: the publisher's unit cost
replaces the cost assumption for the books and dates it covers, the assumption stays everywhere else."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from include.luigi_tasks.extract_source import extract_source
from include.luigi_tasks.landing_zone import ingest_landing_zone
from include.pacbook.publisher_files import PriceRow, write_price_list
from tests.conftest import query_all
from tests.marts.test_dbt_build import dbt_build

UNKNOWN_ISBN = "9799999999990"  # listed by the publisher, not (yet) in PacBook's catalogue
CENT = Decimal("0.01")


def test_file_costs_replace_the_assumption_for_their_books_and_dates(
    postgres, generated_source, folders, monkeypatch, tmp_path
):
    warehouse_uri = postgres.fresh_database("warehouse_landing_dbt")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", generated_source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse_uri)
    extract_source("landing_dbt")

    # the three best-selling books: A costed by the file for all its sales (with a price change in
    # the middle), C only from the middle of its sales on, B not in any file
    best_sellers = query_all(
        warehouse_uri,
        """
        select book.book_id, lpad(btrim(book.isbn13), 13, '0'), count(*), max(cust_order.order_date)::date,
            percentile_disc(0.5) within group (order by cust_order.order_date)::date
        from staging.order_line
        inner join staging.cust_order using (order_id)
        inner join staging.book using (book_id)
        group by book.book_id, book.isbn13
        order by count(*) desc, book.book_id
        limit 3
        """,
    )
    (book_a, isbn_a, *_, middle_a), (book_c, isbn_c, *_, middle_c), (book_b, *_) = best_sellers
    file_costs = {
        isbn_a: [(dt.date(2000, 1, 1), Decimal("4.1250")), (middle_a, Decimal("5.0000"))],
        isbn_c: [(middle_c, Decimal("3.3300"))],
    }
    rows = [PriceRow(isbn, cost, "USD", start) for isbn, costs in file_costs.items() for start, cost in costs]
    write_price_list(
        folders.landing,
        "best-sellers-press",
        dt.date(2024, 3, 1),
        [*rows, PriceRow(UNKNOWN_ISBN, Decimal("9.99"), "USD", dt.date(2023, 1, 1))],
    )
    assert ingest_landing_zone(warehouse_uri, "landing_dbt")["rows_loaded"] == len(rows) + 1

    # cautious: only the tests of the selected models, not those of models beside them
    results = dbt_build(
        warehouse_uri, tmp_path / "target", "--select", "+profitability", "--indirect-selection", "cautious"
    )

    # the unknown ISBN is loaded and counted by the warn test, not dropped
    [unknown_isbn_test] = [
        r for r in results["results"] if "relationships_stg_publisher_files__book_costs_isbn13" in r["unique_id"]
    ]
    assert (unknown_isbn_test["status"], unknown_isbn_test["failures"]) == ("warn", 1)

    [(default_rate,)] = query_all(
        warehouse_uri, "select cost_rate from dwh.publisher_cost_rates where publisher_id is null"
    )
    assert query_all(warehouse_uri, "select count(*) from dwh.publisher_cost_rates where publisher_id is not null") == [
        (0,)
    ]
    net_lines = query_all(
        warehouse_uri,
        """
        select fct_sales.book_id, dim_book.isbn13, fct_sales.order_date, fct_sales.sales_amount
        from dwh.fct_sales
        inner join dwh.dim_book using (book_key)
        where fct_sales.is_net_revenue
        """,
    )

    def expected_line_cost(isbn: str, ordered_at: dt.datetime, price: Decimal) -> tuple[Decimal, bool]:
        started = [cost for start, cost in file_costs.get(isbn, []) if start <= ordered_at.date()]
        if started:
            return started[-1].quantize(CENT, rounding=ROUND_HALF_UP), True
        return (price * default_rate).quantize(CENT, rounding=ROUND_HALF_UP), False

    expected: dict[str, list] = {}
    for book_id, isbn, ordered_at, price in net_lines:
        cost, from_file = expected_line_cost(isbn, ordered_at, price)
        totals = expected.setdefault(str(book_id), [Decimal(0), 0, 0])
        totals[0] += cost
        totals[1] += 1
        totals[2] += int(from_file)

    actual = {
        member_id: [cost, books_sold, with_file_cost, source]
        for member_id, cost, books_sold, with_file_cost, source in query_all(
            warehouse_uri,
            "select member_id, estimated_cost_of_goods, books_sold, books_sold_with_file_cost, cost_source "
            "from marts.profitability where grain = 'book'",
        )
    }
    assert {member: values[:3] for member, values in actual.items()} == expected
    label = {member: values[3] for member, values in actual.items()}
    assert (label[str(book_a)], label[str(book_c)], label[str(book_b)]) == ("publisher_file", "mixed", "assumption")
    assert all(source == "assumption" for member, source in label.items() if member not in (str(book_a), str(book_c)))
    # both of A's prices were used: lines before and after the change
    a_costs = {
        expected_line_cost(isbn, ordered_at, price)[0]
        for book_id, isbn, ordered_at, price in net_lines
        if book_id == book_a
    }
    assert a_costs == {Decimal("4.13"), Decimal("5.00")}
