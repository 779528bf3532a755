"""Daily and month-end reports on a built warehouse: their numbers against queries written here, a
rewrite that changes nothing, pages that open in a real browser with their charts, the dbt docs site."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import re
import shutil
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from include.pacbook import config
from include.pacbook.headless_browser import screenshot
from include.pacbook.reports import (
    ReportError,
    is_month_end,
    publish_dbt_docs,
    write_daily_report,
    write_month_end_report,
    write_reports,
)
from tests.conftest import query_all, query_one
from tests.reports import BuiltWarehouse, build_warehouse

RUN_ID = "scheduled__files_out_test"
README_SCREENSHOT = config.PROJECT_ROOT / "docs" / "img" / "month_end_report.png"


@pytest.fixture(scope="module")
def warehouse(postgres, generated_source, tmp_path_factory) -> BuiltWarehouse:
    built = build_warehouse(postgres, generated_source, tmp_path_factory.mktemp("dbt_reports"))
    with psycopg.connect(built.uri, autocommit=True) as conn:
        # What the validation step records for a run (the rows themselves would be in quarantine).
        conn.execute(
            """
            insert into audit.rejected_rows (run_id, source_name, rule, rejected_rows) values
                (%(run)s, 'order_line', 'negative_price', 3), (%(run)s, 'customer', 'email_malformed', 2),
                ('another_run', 'order_line', 'negative_price', 40)
            """,
            {"run": RUN_ID},
        )
        # A forecast written a month before the month end, so "forecast vs actual" has a month to judge.
        conn.execute(
            """
            insert into marts.sales_forecast
            select %(early)s, measure, %(month)s, forecast, lower_80, upper_80, model, model_version, trained_through
            from marts.sales_forecast
            where run_date = %(run)s and month = (select min(month) from marts.sales_forecast where run_date = %(run)s)
            """,
            {
                "early": built.month_end.replace(day=1) - dt.timedelta(days=1),
                "month": built.month_end.replace(day=1),
                "run": built.forecast_run,
            },
        )
    return built


@pytest.fixture(scope="module")
def busy_day(warehouse) -> dt.date:
    """The day with the most orders that is not a month end (ties: the latest)."""
    rows = query_all(
        warehouse.uri,
        "select order_date::date, count(distinct order_id) from dwh.fct_sales group by 1 order by 2 desc, 1 desc",
    )
    return next(day for day, _ in rows if not is_month_end(day))


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def as_text(value) -> str:
    """A database value the way the reports write it into CSV."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def rows_as_text(rows: list[tuple]) -> list[list[str]]:
    return [[as_text(v) for v in row] for row in rows]


def csv_rows(path: Path, columns: list[str] | None = None) -> list[list[str]]:
    rows = read_csv(path)
    columns = columns or (list(rows[0]) if rows else [])
    return [[row[c] for c in columns] for row in rows]


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)]


def test_month_end_is_the_last_day_of_a_month():
    assert (
        is_month_end(dt.date(2024, 2, 29))
        and is_month_end(dt.date(2023, 2, 28))
        and is_month_end(dt.date(2023, 12, 31))
    )
    assert not is_month_end(dt.date(2024, 2, 28)) and not is_month_end(dt.date(2024, 3, 1))


def test_daily_report_numbers_match_the_warehouse(warehouse, busy_day, reports_dir, output_dir):
    written = write_reports(warehouse.uri, busy_day, reports_dir, RUN_ID)
    assert set(written) == {"daily"}
    folder = reports_dir / busy_day.isoformat()
    assert sorted(p.name for p in folder.iterdir()) == [
        "daily.html",
        "daily_last_30_days.csv",
        "daily_new_customers.csv",
        "daily_rejected_rows.csv",
        "daily_summary.csv",
        "daily_top_books.csv",
    ]

    # The day's totals, from the order lines of the fact table (not from the daily_sales mart the report reads).
    day = {"start": busy_day, "end": busy_day + dt.timedelta(days=1)}
    orders, lines, gross, net, customers = query_one(
        warehouse.uri,
        """
        select count(distinct order_id), count(*), sum(sales_amount), sum(net_sales_amount), count(distinct customer_id)
        from dwh.fct_sales where order_date >= %(start)s and order_date < %(end)s
        """,
        day,
    )
    new_customers = query_all(
        warehouse.uri,
        """
        select customer_id, min(order_date) from dwh.fct_sales group by customer_id
        having min(order_date) >= %(start)s and min(order_date) < %(end)s order by 2, 1
        """,
        day,
    )
    (summary,) = read_csv(folder / "daily_summary.csv")
    assert summary["date"] == busy_day.isoformat()
    assert (int(summary["orders"]), int(summary["books_sold"]), int(summary["active_customers"])) == (
        orders,
        lines,
        customers,
    )
    assert (Decimal(summary["gross_revenue"]), Decimal(summary["net_revenue"])) == (gross, net)
    assert int(summary["new_customers"]) == len(new_customers)
    assert [[r[0], r[1]] for r in csv_rows(folder / "daily_new_customers.csv")] == rows_as_text(new_customers)

    # Top books of the day by revenue, ties by copies then book id.
    top = query_all(
        warehouse.uri,
        """
        select book_id, count(*), sum(sales_amount) from dwh.fct_sales
        where order_date >= %(start)s and order_date < %(end)s
        group by book_id order by 3 desc, 2 desc, 1 limit 10
        """,
        day,
    )
    assert csv_rows(folder / "daily_top_books.csv", ["book_id", "quantity", "gross_revenue"]) == rows_as_text(top)

    # Rejected rows: the run's own rows of audit.rejected_rows, nobody else's.
    rejected = query_all(
        warehouse.uri,
        "select source_name, rule, rejected_rows from audit.rejected_rows where run_id = %s order by 3 desc, 1, 2",
        (RUN_ID,),
    )
    assert csv_rows(folder / "daily_rejected_rows.csv", ["source_name", "rule", "rejected_rows"]) == rows_as_text(
        rejected
    )
    assert int(summary["rejected_rows"]) == sum(r[2] for r in rejected) == 5

    trend = read_csv(folder / "daily_last_30_days.csv")
    assert len(trend) == 30 and trend[-1]["date"] == busy_day.isoformat()
    assert Decimal(trend[-1]["gross_revenue"]) == gross

    html = (folder / "daily.html").read_text()
    assert RUN_ID in html and busy_day.isoformat() in html and "Generated" in html
    assert 'href="month_end.html"' not in html  # not a month end: no link to a page that does not exist
    pngs = embedded_pngs(html)
    assert pngs and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    shot = screenshot((folder / "daily.html").as_uri(), output_dir / "daily_report.png", height=2400)
    assert shot.stat().st_size > 20_000


def test_rejected_rows_without_the_audit_table_are_zero_with_a_note(warehouse, busy_day, tmp_path):
    with psycopg.connect(warehouse.uri, autocommit=True) as conn:
        conn.execute("alter table audit.rejected_rows rename to rejected_rows_away")
    try:
        write_daily_report(warehouse.uri, busy_day, tmp_path, RUN_ID)
    finally:
        with psycopg.connect(warehouse.uri, autocommit=True) as conn:
            conn.execute("alter table audit.rejected_rows_away rename to rejected_rows")
    (summary,) = read_csv(tmp_path / busy_day.isoformat() / "daily_summary.csv")
    assert summary["rejected_rows"] == "0"
    assert "audit.rejected_rows does not exist" in (tmp_path / busy_day.isoformat() / "daily.html").read_text()


def test_month_end_report_numbers_match_the_marts(warehouse, reports_dir, output_dir):
    month_end, month = warehouse.month_end, warehouse.month_end.replace(day=1)
    written = write_reports(warehouse.uri, month_end, reports_dir, RUN_ID)
    assert set(written) == {"daily", "month_end"}
    folder = reports_dir / month_end.isoformat()
    uri = warehouse.uri

    # The month against the fact table; the trend against marts.monthly_sales.
    gross, lines = query_one(
        uri,
        "select sum(sales_amount), count(*) from dwh.fct_sales where order_date >= %s and order_date < %s",
        (month, month_end + dt.timedelta(days=1)),
    )
    summary = {row["period"]: row for row in read_csv(folder / "month_end_summary.csv")}
    assert summary["this month"]["month"] == month.isoformat()
    assert (Decimal(summary["this month"]["gross_revenue"]), int(summary["this month"]["books_sold"])) == (gross, lines)
    trend = query_all(
        uri,
        """
        select month, orders, books_sold, gross_revenue, net_revenue, customers from marts.monthly_sales
        where month <= %s order by month desc limit 24
        """,
        (month,),
    )
    assert csv_rows(folder / "month_end_monthly_trend.csv") == rows_as_text(trend[::-1])

    # The forecast of the night's run, with its interval, and its backtest, as written by the forecast task.
    forecast = query_all(
        uri,
        """
        select run_date, measure, month, forecast, lower_80, upper_80, model, trained_through
        from marts.sales_forecast where run_date = %s order by measure, month
        """,
        (warehouse.forecast_run,),
    )
    assert len(forecast) == 12 and csv_rows(folder / "month_end_forecast.csv") == rows_as_text(forecast)
    backtest = query_all(
        uri,
        """
        select run_date, measure, method, origins, first_origin, last_origin, mape, mae
        from marts.sales_forecast_backtest where run_date = %s order by measure, method
        """,
        (warehouse.forecast_run,),
    )
    assert backtest and csv_rows(folder / "month_end_forecast_backtest.csv") == rows_as_text(backtest)
    (earlier,) = [
        r for r in read_csv(folder / "month_end_forecasts_of_this_month.csv") if r["measure"] == "gross_revenue"
    ]
    assert Decimal(earlier["actual"]) == gross
    assert Decimal(earlier["error"]) == gross - Decimal(earlier["forecast"])
    assert earlier["within_interval"] == as_text(Decimal(earlier["lower_80"]) <= gross <= Decimal(earlier["upper_80"]))

    top_books = query_all(
        uri,
        """
        select book_id, quantity, gross_revenue from marts.book_sales_monthly where month = %s
        order by gross_revenue desc, quantity desc, book_id limit 10
        """,
        (month,),
    )
    assert csv_rows(folder / "month_end_top_books.csv", ["book_id", "quantity", "gross_revenue"]) == rows_as_text(
        top_books
    )

    segments = {
        r[0]: r[1:]
        for r in query_all(
            uri, "select rfm_segment, count(*), sum(total_sales) from marts.customer_segments group by rfm_segment"
        )
    }
    segment_rows = read_csv(folder / "month_end_customer_segments.csv")
    assert {r["rfm_segment"]: (int(r["customers"]), Decimal(r["total_sales"])) for r in segment_rows} == segments

    publishers = query_all(
        uri,
        """
        select member_id, revenue, estimated_cost_of_goods, shipping_cost, margin, margin_pct
        from marts.profitability where grain = 'publisher' order by revenue desc, member_id
        """,
    )
    columns = ["publisher_id", "revenue", "estimated_cost_of_goods", "shipping_cost", "margin", "margin_pct"]
    assert csv_rows(folder / "month_end_margin_by_publisher.csv", columns) == rows_as_text(publishers)

    # Days to repeat: the distribution of avg_days_between_orders, counted here with width_bucket.
    buckets = dict(
        query_all(
            uri,
            """
            select coalesce(width_bucket(avg_days_between_orders, array[0, 30, 60, 90, 180, 365]::numeric[]), 0),
                count(*)
            from marts.customer_repeat_orders group by 1
            """,
        )
    )
    distribution = read_csv(folder / "month_end_days_to_repeat.csv")
    assert [int(r["customers"]) for r in distribution] == [buckets.get(i, 0) for i in range(7)]
    (repeat_customers,) = query_one(uri, "select count(*) from marts.customer_repeat_orders")
    assert sum(int(r["customers"]) for r in distribution) == repeat_customers

    html = (folder / "month_end.html").read_text()
    assert RUN_ID in html and month_end.isoformat() in html
    pngs = embedded_pngs(html)
    assert len(pngs) >= 5 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    assert 'href="daily.html"' in html
    shot = screenshot((folder / "month_end.html").as_uri(), output_dir / "month_end_report.png", height=2000)
    assert shot.stat().st_size > 50_000
    if not README_SCREENSHOT.exists():  # the README's picture; delete it to take a new one
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_SCREENSHOT)


def test_rewriting_a_date_is_idempotent_and_swaps_the_folder(warehouse, reports_dir):
    month_end = warehouse.month_end
    folder = reports_dir / month_end.isoformat()
    write_reports(warehouse.uri, month_end, reports_dir, RUN_ID)
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    inode = folder.stat().st_ino
    with (folder / "month_end_summary.csv").open("rb") as old_file:
        write_reports(warehouse.uri, month_end, reports_dir, RUN_ID)
        assert old_file.read() == first["month_end_summary.csv"]  # a reader of the old folder is not disturbed
    second = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert folder.stat().st_ino != inode, "the folder was rewritten in place, not swapped"
    assert sorted(second) == sorted(first)
    assert {n: b for n, b in second.items() if n.endswith(".csv")} == {
        n: b for n, b in first.items() if n.endswith(".csv")
    }
    assert not [p for p in reports_dir.iterdir() if p.name.startswith(".")], "temporary folders left behind"

    # Rewriting only the daily report keeps the month-end files of the date, and vice versa.
    write_daily_report(warehouse.uri, month_end, reports_dir, RUN_ID)
    write_month_end_report(warehouse.uri, month_end, reports_dir, RUN_ID)
    assert sorted(p.name for p in folder.iterdir()) == sorted(first)
    assert {p.name: p.read_bytes() for p in folder.glob("*.csv")} == {
        n: b for n, b in first.items() if n.endswith(".csv")
    }
    assert (reports_dir / "index.html").read_text().count(month_end.isoformat()) >= 1


def test_month_end_report_refuses_other_days(warehouse, busy_day, tmp_path):
    with pytest.raises(ReportError, match="not the last day"):
        write_month_end_report(warehouse.uri, busy_day, tmp_path, RUN_ID)
    assert not any(tmp_path.iterdir())


def test_dbt_docs_are_published_beside_the_reports(warehouse, tmp_path):
    project_manifest = config.DBT_MANIFEST_PATH
    before = project_manifest.stat().st_mtime_ns if project_manifest.exists() else None
    published = publish_dbt_docs(warehouse.uri, tmp_path / "reports", target_dir=tmp_path / "dbt_target")
    assert published == tmp_path / "reports" / "dbt_docs" / "index.html"
    assert published.stat().st_size > 100_000
    assert "model.pacbook.monthly_sales" in published.read_text()
    assert not [p for p in published.parent.iterdir() if p.name != "index.html"]
    after = project_manifest.stat().st_mtime_ns if project_manifest.exists() else None
    assert after == before, "the project's target/manifest.json that Cosmos renders from was touched"
