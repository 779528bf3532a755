"""Daily and month-end reports on a built warehouse: their numbers against queries written here, a
rewrite that changes nothing, pages that open in a real browser with their charts, the dbt docs site."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import re
import shutil
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from include.pacbook import config
from include.pacbook.headless_browser import screenshot
from include.pacbook.reports import (
    ACCENT,
    BAND,
    ReportError,
    Table,
    _top_books_alt,
    _top_books_chart,
    _top_books_figure,
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

# The charts each page must show, found by their alt text (what a screen reader says): name -> pattern.
DAILY_CHARTS = {
    "revenue per day": r"^Gross and net revenue per day\b",
    "top books": r"^Top books by gross revenue on ",
}
MONTH_END_CHARTS = {
    "monthly trend with forecast": r"^Monthly gross revenue .*\bforecast\b.*\binterval\b",
    "day by day": r"^Gross revenue per day in ",
    "top books": r"^Top books by gross revenue in ",
    "segments": r"\bper RFM segment\b",
    "margin by publisher": r"\bmargin\b.*\bpublishers\b",
    "days to repeat": r"\baverage days between orders\b",
}


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


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append({name: value or "" for name, value in attrs})


def charts_by_alt(html: str) -> dict[str, bytes]:
    """Every image of the page as alt text -> PNG bytes; each must be an embedded PNG with its own alt text."""
    parser = _Images()
    parser.feed(html)
    charts: dict[str, bytes] = {}
    for image in parser.images:
        alt, src = image.get("alt", "").strip(), image.get("src", "")
        assert alt, f"an image without alt text: {src[:60]}"
        assert alt not in charts, f"two charts with the alt text {alt!r}"
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), f"{alt!r} is not an embedded PNG"
        charts[alt] = base64.b64decode(src[len(prefix) :], validate=True)
        assert charts[alt].startswith(b"\x89PNG\r\n\x1a\n"), f"{alt!r} is not a PNG"
    return charts


def required_charts(html: str, required: dict[str, str]) -> dict[str, tuple[str, bytes]]:
    """name -> (alt, PNG) for each required chart; fails naming the charts missing or matched twice."""
    charts = charts_by_alt(html)
    found = {name: [alt for alt in charts if re.search(pattern, alt, re.I)] for name, pattern in required.items()}
    missing = sorted(name for name, alts in found.items() if not alts)
    assert not missing, f"charts missing: {missing}; the page has {sorted(charts)}"
    ambiguous = {name: alts for name, alts in found.items() if len(alts) > 1}
    assert not ambiguous, f"more than one chart matches: {ambiguous}"
    unexpected = sorted(set(charts) - {alts[0] for alts in found.values()})
    assert not unexpected, f"charts nobody asked for (add them to the required list): {unexpected}"
    return {name: (alts[0], charts[alts[0]]) for name, alts in found.items()}


def pixels(png: bytes, colour: str = ACCENT) -> int:
    """Pixels of exactly that colour: by default the accent of the bars; none on the 'no data' placeholder."""
    wanted = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(count for count, found in image.getcolors(maxcolors=1 << 24) if found == wanted)


def test_month_end_is_the_last_day_of_a_month():
    assert (
        is_month_end(dt.date(2024, 2, 29))
        and is_month_end(dt.date(2023, 2, 28))
        and is_month_end(dt.date(2023, 12, 31))
    )
    assert not is_month_end(dt.date(2024, 2, 28)) and not is_month_end(dt.date(2024, 3, 1))


TOP_BOOKS_COLUMNS = {
    "daily": ["rank", "book_id", "title", "primary_author_name", "quantity", "gross_revenue"],
    "month_end": ["rank", "book_id", "title", "quantity", "gross_revenue", "cumulative_quantity"],
}


@pytest.mark.parametrize("report", sorted(TOP_BOOKS_COLUMNS))
def test_top_books_chart_draws_the_top_books_table(report):
    """One bar per row of the top-books table, rank 1 on top, its revenue as the bar, books sold beside it."""
    books = [  # rank, book_id, title, quantity, gross_revenue
        (1, 11, "Same title", 7, Decimal("120.50")),
        (2, 12, "Same title", 9, Decimal("99.99")),
        (3, 13, None, 1, Decimal("5.00")),  # a book missing from dim_book
    ]
    values = [
        {"rank": r, "book_id": b, "title": t, "quantity": q, "gross_revenue": g, "primary_author_name": "An Author"}
        for r, b, t, q, g in books
    ]
    columns = TOP_BOOKS_COLUMNS[report]
    table = Table(f"{report}_top_books.csv", columns, [tuple(v.get(c, 100) for c in columns) for v in values])
    (axes,) = _top_books_figure(table, "in March 2024").axes
    assert axes.get_title(loc="left") == "Top 3 books by gross revenue in March 2024"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("Gross revenue", "Book")
    top_down = sorted(axes.patches, key=lambda bar: -bar.get_y())
    assert [bar.get_width() for bar in top_down] == [120.5, 99.99, 5.0]
    labels = zip(axes.get_yticks(), axes.get_yticklabels(), strict=True)
    ticks = {round(tick): label.get_text() for tick, label in labels}
    names = [ticks[round(bar.get_y() + bar.get_height() / 2)] for bar in top_down]
    assert names == ["1. Same title", "2. Same title", "3. book 13"]
    assert sorted(text.get_text() for text in axes.texts) == ["1 sold", "7 sold", "9 sold"]
    assert pixels(base64.b64decode(_top_books_chart(table, "in March 2024"))) > 2_000

    empty = Table(table.file, columns, [])
    placeholder = base64.b64decode(_top_books_chart(empty, "in March 2024"))
    assert placeholder.startswith(b"\x89PNG") and pixels(placeholder) == 0
    assert _top_books_alt(empty, "in March 2024") == "Top books by gross revenue in March 2024: no books sold"


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
    charts = required_charts(html, DAILY_CHARTS)
    alt, png = charts["top books"]
    assert f"the {len(top)} best-selling books" in alt, alt
    assert pixels(png) > 2_000, "the top-books chart draws no bars"
    assert pixels(charts["revenue per day"][1]) > 0, "the report date's bar is not highlighted"
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
    charts = required_charts(html, MONTH_END_CHARTS)
    alt, png = charts["top books"]
    assert f"in {month:%B %Y}: the {len(top_books)} best-selling books" in alt, alt
    for name in ("top books", "segments", "margin by publisher", "days to repeat", "day by day"):
        assert pixels(charts[name][1]) > 500, f"the {name} chart draws no bars"
    assert pixels(charts["monthly trend with forecast"][1], BAND) > 500, "the forecast's 80% interval is not drawn"
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
