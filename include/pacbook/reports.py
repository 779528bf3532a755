"""Daily and month-end reports from the marts, and the dbt docs site published beside them.

    <reports_dir>/<YYYY-MM-DD>/daily.html           the night's page: orders, revenue, top books, new
                                                    customers, rejected rows, the last 30 days
    <reports_dir>/<YYYY-MM-DD>/daily_*.csv          the numbers of that page, one CSV per table
    <reports_dir>/<YYYY-MM-DD>/month_end.html       on the last day of a month: trend with forecast,
                                                    top books, segments, margins, repeat orders,
                                                    forecast vs actual
    <reports_dir>/<YYYY-MM-DD>/month_end_*.csv
    <reports_dir>/index.html                        every report date, newest first
    <reports_dir>/dbt_docs/index.html               the dbt docs site (one self-contained file)

Every page is self-contained (CSS inline, charts as base64 PNG drawn by matplotlib's Agg renderer),
so it opens from disk, as a mail attachment or behind any static file server.

Guarantees:

* **Numbers straight from the marts.** The CSVs hold the marts' own values (exact decimals, no
  re-rounding), read in one ``repeatable read`` snapshot so every table of a report agrees.
* **Idempotent per date.** A CSV holds only data and is sorted with full tie-breakers, so writing the
  same date again against the same warehouse gives byte-identical CSVs; only the HTML's header
  (run id, generation time) changes.
* **Atomic per date.** A report date's folder is built complete in a hidden sibling folder, then
  swapped in with one ``renameat2(RENAME_EXCHANGE)`` (or two renames where the file system lacks
  it): a reader sees the old folder or the new one, never a mix. Writing the daily report keeps the
  folder's month-end files and vice versa.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import ctypes
import datetime as dt
import errno
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg

from include.pacbook import config

log = logging.getLogger("pacbook.reports")

TEMPLATE_PATH = Path(__file__).with_name("report_template.html")
DAILY_PREFIX = "daily"
MONTH_END_PREFIX = "month_end"
TOP_BOOKS = 10
HTML_TABLE_ROWS = 15
TREND_MONTHS = 24
DAILY_TREND_DAYS = 30
# Days-to-repeat buckets of customer_repeat_orders.avg_days_between_orders: [low, high) in days.
REPEAT_BUCKETS = ((0, 30), (30, 60), (60, 90), (90, 180), (180, 365), (365, None))
# customer_segments.rfm_segment, in the order of its rules (best first).
SEGMENT_ORDER = ("Champions", "Loyal", "New", "Potential Loyalist", "Cannot Lose Them", "At Risk", "Hibernating")
REQUIRED_RELATIONS = (
    "marts.daily_sales",
    "marts.monthly_sales",
    "marts.book_sales_monthly",
    "marts.customer_repeat_orders",
    "marts.customer_segments",
    "marts.profitability",
    "dwh.fct_sales",
    "dwh.dim_book",
)

# Chart colours: one accent for "this period", a muted one for context, a band for intervals.
ACCENT, MUTED, SECOND, BAND = "#1f5fa8", "#a9bdd6", "#d9822b", "#f3d3b3"


class ReportError(RuntimeError):
    pass


def is_month_end(day: dt.date) -> bool:
    """True on the last day of a calendar month."""
    return (day + dt.timedelta(days=1)).day == 1


# --------------------------------------------------------------------------------------- the content


@dataclass
class Table:
    """One CSV file and the table that shows it on the page."""

    file: str
    columns: list[str]
    rows: list[tuple]
    title: str = ""
    note: str = ""
    html_rows: int | None = HTML_TABLE_ROWS  # rows shown on the page (None = all, 0 = a link only)


@dataclass
class Section:
    title: str
    intro: str = ""
    chart: str | None = None  # base64 PNG
    chart_alt: str = ""
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Kpi:
    label: str
    value: str
    detail: str = ""


@dataclass
class Report:
    name: str  # daily | month_end
    title: str
    subtitle: str
    kpis: list[Kpi]
    sections: list[Section]
    notes: list[str] = field(default_factory=list)

    @property
    def tables(self) -> list[Table]:
        return [table for section in self.sections for table in section.tables]


def _fetch(conn: psycopg.Connection, query: str, params: dict | None = None) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(query, params or {})
    return [c.name for c in cursor.description], cursor.fetchall()


def _table(conn, file: str, query: str, params: dict | None = None, **kwargs) -> Table:
    columns, rows = _fetch(conn, query, params)
    return Table(file=file, columns=columns, rows=rows, **kwargs)


def _exists(conn: psycopg.Connection, relation: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()[0]


def _require_marts(conn: psycopg.Connection) -> None:
    missing = [relation for relation in REQUIRED_RELATIONS if not _exists(conn, relation)]
    if missing:
        raise ReportError(f"reports need {', '.join(missing)}: build the dbt project first (dbt build)")


@contextlib.contextmanager
def _snapshot(warehouse_uri: str) -> Iterator[psycopg.Connection]:
    """One read-only snapshot for a whole report, so its tables agree with each other."""
    with psycopg.connect(warehouse_uri, application_name="pacbook-reports", connect_timeout=10) as conn:
        conn.execute("set session characteristics as transaction isolation level repeatable read, read only")
        conn.execute("set timezone = 'UTC'")
        conn.commit()
        with conn.transaction():
            yield conn


# --- daily


def _rejected_rows(conn: psycopg.Connection, report_date: dt.date, run_id: str | None) -> tuple[Table, str]:
    """The run's rows kept out of the warehouse (audit.rejected_rows), and how they were selected."""
    columns = ["run_id", "source_name", "rule", "rejected_rows"]
    if not _exists(conn, "audit.rejected_rows"):
        return Table("daily_rejected_rows.csv", columns, []), (
            "audit.rejected_rows does not exist in this warehouse: no validation has recorded rejected rows, "
            "so 0 is shown."
        )
    if run_id:
        where, params, rule = "run_id = %(run_id)s", {"run_id": run_id}, f"rows rejected by run {run_id}"
    else:
        where = "recorded_at >= %(day)s::date and recorded_at < %(day)s::date + 1"
        params, rule = {"day": report_date}, f"no run id given: rows recorded on {report_date} (UTC), any run"
    table = _table(
        conn,
        "daily_rejected_rows.csv",
        f"""
        select run_id, source_name, rule, rejected_rows
        from audit.rejected_rows
        where {where}
        order by rejected_rows desc, source_name, rule, run_id
        """,
        params,
        title="Rejected rows",
    )
    return table, f"Read from audit.rejected_rows: {rule} (the rows themselves are in quarantine.<table>)."


def build_daily_report(conn: psycopg.Connection, report_date: dt.date, run_id: str | None) -> Report:
    _require_marts(conn)
    day = {"day": report_date, "date_key": int(report_date.strftime("%Y%m%d"))}
    summary_row = conn.execute(
        """
        select orders, books_sold, gross_revenue, net_revenue, active_customers
        from marts.daily_sales where date = %(day)s
        """,
        day,
    ).fetchone()
    notes = []
    if summary_row is None:
        bounds = conn.execute("select min(date), max(date) from marts.daily_sales").fetchone()
        notes.append(
            f"{report_date} is outside marts.daily_sales ({bounds[0]} to {bounds[1]}): no orders are known for it."
        )
        summary_row = (0, 0, Decimal("0.00"), Decimal("0.00"), 0)
    new_customers = _table(
        conn,
        "daily_new_customers.csv",
        """
        select repeat_orders.customer_id, repeat_orders.first_order_at, segments.country_name
        from marts.customer_repeat_orders as repeat_orders
        left join marts.customer_segments as segments on repeat_orders.customer_id = segments.customer_id
        where repeat_orders.first_order_at >= %(day)s::date and repeat_orders.first_order_at < %(day)s::date + 1
        order by repeat_orders.first_order_at, repeat_orders.customer_id
        """,
        day,
        title="New customers (first order on this day)",
    )
    rejected, rejected_note = _rejected_rows(conn, report_date, run_id)
    rejected_total = sum(row[3] for row in rejected.rows)
    orders, books_sold, gross, net, active = summary_row
    summary = Table(
        "daily_summary.csv",
        [
            "date",
            "orders",
            "books_sold",
            "gross_revenue",
            "net_revenue",
            "active_customers",
            "new_customers",
            "rejected_rows",
        ],
        [(report_date, orders, books_sold, gross, net, active, len(new_customers.rows), rejected_total)],
        title="The day in one row",
    )
    top_books = _table(
        conn,
        "daily_top_books.csv",
        """
        select
            row_number() over (order by sum(sales.sales_amount) desc, count(*) desc, sales.book_id) as rank,
            sales.book_id,
            max(books.title) as title,
            max(books.primary_author_name) as primary_author_name,
            count(*) as quantity,
            sum(sales.sales_amount) as gross_revenue
        from dwh.fct_sales as sales
        left join dwh.dim_book as books on sales.book_id = books.book_id
        where sales.date_key = %(date_key)s
        group by sales.book_id
        order by rank
        limit %(top)s
        """,
        {**day, "top": TOP_BOOKS},
        title=f"Top {TOP_BOOKS} books of the day by revenue",
        note="From dwh.fct_sales (one row per order line; quantity = lines), gross of every order status.",
    )
    trend = _table(
        conn,
        "daily_last_30_days.csv",
        """
        select date, orders, books_sold, gross_revenue, net_revenue, active_customers
        from marts.daily_sales
        where date > %(day)s::date - %(days)s and date <= %(day)s::date
        order by date
        """,
        {**day, "days": DAILY_TREND_DAYS},
        title=f"The last {DAILY_TREND_DAYS} days",
        html_rows=0,
    )
    trend_days = [row for row in trend.rows if row[0] != report_date]
    average_revenue = sum((row[3] for row in trend_days), Decimal(0)) / len(trend_days) if trend_days else 0
    average_orders = sum(row[1] for row in trend_days) / len(trend_days) if trend_days else 0.0
    kpis = [
        Kpi("Orders", _number(orders), f"30-day average {average_orders:,.1f}"),
        Kpi("Gross revenue", _money(gross), f"30-day average {_money(average_revenue)}"),
        Kpi("Net revenue", _money(net), "without cancelled / returned orders"),
        Kpi("Books sold", _number(books_sold), "order lines"),
        Kpi("New customers", _number(len(new_customers.rows)), "first order on this day"),
        Kpi("Rejected rows", _number(rejected_total), "kept out by validation"),
    ]
    sections = [
        Section("Summary", tables=[summary], notes=notes),
        Section(
            f"The last {DAILY_TREND_DAYS} days",
            chart=_daily_trend_chart(trend.rows, report_date),
            chart_alt=f"Gross and net revenue per day, the {DAILY_TREND_DAYS} days up to {report_date}",
            tables=[trend],
        ),
        Section(
            "Top books",
            chart=_top_books_chart(top_books, f"on {report_date:%d %B %Y}"),
            chart_alt=_top_books_alt(top_books, f"on {report_date}"),
            tables=[top_books],
        ),
        Section("New customers", intro="Pseudonymous ids only, as in the marts.", tables=[new_customers]),
        Section("Data quality", tables=[rejected], notes=[rejected_note]),
    ]
    return Report(
        name=DAILY_PREFIX,
        title=f"PacBook daily report — {report_date:%A %d %B %Y}",
        subtitle="Orders placed on this day (the source's own time), from marts.daily_sales and dwh.fct_sales.",
        kpis=kpis,
        sections=sections,
    )


# --- month end


def _chosen_forecast_run(conn: psycopg.Connection, report_date: dt.date) -> dt.date | None:
    """The forecast written by the run for this night (run_date = the interval's end, the next day),
    or the newest one before it; none written later than that (it would know the future)."""
    if not _exists(conn, "marts.sales_forecast"):
        return None
    return conn.execute(
        "select max(run_date) from marts.sales_forecast where run_date <= %s::date + 1", (report_date,)
    ).fetchone()[0]


def build_month_end_report(conn: psycopg.Connection, report_date: dt.date, run_id: str | None) -> Report:
    if not is_month_end(report_date):
        raise ReportError(f"{report_date} is not the last day of its month: no month-end report for it")
    _require_marts(conn)
    month = report_date.replace(day=1)
    params = {"month": month, "trend_months": TREND_MONTHS - 1}
    notes: list[str] = []

    summary = _table(
        conn,
        "month_end_summary.csv",
        """
        select periods.period, sales.month, sales.orders, sales.books_sold, sales.gross_revenue,
            sales.net_revenue, sales.customers
        from (values
            (1, 'this month', %(month)s::date),
            (2, 'previous month', (%(month)s::date - interval '1 month')::date),
            (3, 'same month last year', (%(month)s::date - interval '1 year')::date)
        ) as periods (position, period, month)
        join marts.monthly_sales as sales on periods.month = sales.month
        order by periods.position
        """,
        params,
        title="This month against the previous month and the same month last year",
    )
    this_month = next((row for row in summary.rows if row[0] == "this month"), None)
    if this_month is None:
        notes.append(f"marts.monthly_sales has no row for {month:%B %Y}: no orders are known for it.")
    trend = _table(
        conn,
        "month_end_monthly_trend.csv",
        """
        select month, orders, books_sold, gross_revenue, net_revenue, customers
        from marts.monthly_sales
        where month >= (%(month)s::date - %(trend_months)s * interval '1 month')::date and month <= %(month)s
        order by month
        """,
        params,
        title=f"The last {TREND_MONTHS} months (marts.monthly_sales)",
        html_rows=None,
    )
    daily = _table(
        conn,
        "month_end_daily_sales.csv",
        """
        select date, orders, books_sold, gross_revenue, net_revenue, active_customers
        from marts.daily_sales
        where date >= %(month)s and date < (%(month)s::date + interval '1 month')::date
        order by date
        """,
        params,
        title="Day by day (marts.daily_sales)",
        html_rows=0,
    )

    forecast_run = _chosen_forecast_run(conn, report_date)
    forecast_columns = ["run_date", "measure", "month", "forecast", "lower_80", "upper_80", "model", "trained_through"]
    forecast = Table("month_end_forecast.csv", forecast_columns, [], title="Forecast (80% prediction interval)")
    backtest_columns = ["run_date", "measure", "method", "origins", "first_origin", "last_origin", "mape", "mae"]
    backtest = Table("month_end_forecast_backtest.csv", backtest_columns, [], title="Backtest: one month ahead")
    forecast_notes = []
    if forecast_run is None:
        forecast_notes.append(
            "No forecast in marts.sales_forecast for this night or before it: the chart shows actuals only."
        )
    else:
        forecast = _table(
            conn,
            "month_end_forecast.csv",
            f"""
            select {", ".join(forecast_columns)}
            from marts.sales_forecast where run_date = %(run)s
            order by measure, month
            """,
            {"run": forecast_run},
            title=f"Forecast of {forecast_run} (80% prediction interval)",
        )
        forecast_notes.append(
            f"Forecast written on {forecast_run}, trained on complete months up to "
            f"{forecast.rows[0][7]:%B %Y}; model {forecast.rows[0][6]}. Quantity = books sold (order lines)."
        )
        if _exists(conn, "marts.sales_forecast_backtest"):
            backtest = _table(
                conn,
                "month_end_forecast_backtest.csv",
                f"""
                select {", ".join(backtest_columns)}
                from marts.sales_forecast_backtest where run_date = %(run)s
                order by measure, method
                """,
                {"run": forecast_run},
                title="Backtest: one-month-ahead forecasts against what happened",
                note="mape = mean absolute percentage error (0.25 = 25%); mae = mean absolute error. "
                "model = the forecast method, seasonal_naive = the same month a year earlier (the baseline).",
            )
    earlier = Table(
        "month_end_forecasts_of_this_month.csv",
        ["run_date", "measure", "forecast", "lower_80", "upper_80", "actual", "error", "within_interval"],
        [],
        title=f"What earlier forecasts said about {month:%B %Y}",
    )
    if _exists(conn, "marts.sales_forecast"):
        earlier = _table(
            conn,
            earlier.file,
            """
            select forecasts.run_date, forecasts.measure, forecasts.forecast, forecasts.lower_80,
                forecasts.upper_80, actuals.actual, actuals.actual - forecasts.forecast as error,
                actuals.actual between forecasts.lower_80 and forecasts.upper_80 as within_interval
            from marts.sales_forecast as forecasts
            left join lateral (
                select case forecasts.measure
                    when 'gross_revenue' then sales.gross_revenue
                    when 'quantity' then sales.books_sold
                end as actual
                from marts.monthly_sales as sales where sales.month = forecasts.month
            ) as actuals on true
            where forecasts.month = %(month)s and forecasts.run_date <= %(month)s
            order by forecasts.measure, forecasts.run_date
            """,
            params,
            title=earlier.title,
            note="Forecasts written before the month began, against its actual value (marts.monthly_sales).",
        )

    top_books = _table(
        conn,
        "month_end_top_books.csv",
        """
        select
            row_number() over (order by gross_revenue desc, quantity desc, book_id) as rank,
            book_id, title, quantity, gross_revenue, cumulative_quantity
        from marts.book_sales_monthly
        where month = %(month)s
        order by rank
        limit %(top)s
        """,
        {**params, "top": TOP_BOOKS},
        title=f"Top {TOP_BOOKS} books of the month by revenue (marts.book_sales_monthly)",
    )
    segments = _table(
        conn,
        "month_end_customer_segments.csv",
        """
        select rfm_segment, count(*) as customers, sum(total_sales) as total_sales, sum(net_sales) as net_sales,
            sum(sales_last_12_months) as sales_last_12_months, sum(orders) as orders
        from marts.customer_segments
        group by rfm_segment
        order by array_position(%(order)s::text[], rfm_segment), rfm_segment
        """,
        {"order": list(SEGMENT_ORDER)},
        title="Customer segments (marts.customer_segments)",
    )
    # Where the mart says how its cost of goods was found (publishers' price lists or the assumption), show it.
    provenance = [
        name
        for (name,) in conn.execute(
            """
            select column_name from information_schema.columns
            where table_schema = 'marts' and table_name = 'profitability'
                and column_name in ('books_sold_with_file_cost', 'cost_source')
            order by column_name
            """
        ).fetchall()
    ]
    publishers = _table(
        conn,
        "month_end_margin_by_publisher.csv",
        """
        select member_id as publisher_id, member as publisher, orders, books_sold, revenue,
            estimated_cost_of_goods, shipping_cost, gross_margin, margin, margin_pct{extra}
        from marts.profitability
        where grain = 'publisher'
        order by revenue desc, member_id
        """.format(extra="".join(", " + column for column in provenance)),
        title="Margin by publisher, highest revenue first (marts.profitability)",
        note="Net sales only (cancelled and returned orders carry no revenue or cost); cost of goods from the "
        "publishers' price lists where the mart has them, else estimated from the seed publisher_cost_rates; "
        "shipping borne by PacBook (see marts.profitability in the dbt docs). gross_margin = before shipping.",
    )
    repeat = _repeat_distribution(conn)
    caveat = (
        "customer_segments, profitability and customer_repeat_orders describe all orders up to the latest one "
        "in the warehouse, not only up to this month end."
    )
    if not this_month:
        kpis = [Kpi("Orders", "0", f"{month:%B %Y}")]
    else:
        _, _, orders, books_sold, gross, net, customers = this_month
        previous = next((row for row in summary.rows if row[0] == "previous month"), None)
        last_year = next((row for row in summary.rows if row[0] == "same month last year"), None)
        kpis = [
            Kpi("Gross revenue", _money(gross), _change(gross, previous[4] if previous else None, "previous month")),
            Kpi("Net revenue", _money(net), _change(net, previous[5] if previous else None, "previous month")),
            Kpi("Orders", _number(orders), _change(orders, last_year[2] if last_year else None, "a year ago")),
            Kpi("Books sold", _number(books_sold), "order lines"),
            Kpi("Customers", _number(customers), "ordering this month"),
        ]
        by_measure = {row[1]: row for row in backtest.rows if row[2] == "model"}
        if "gross_revenue" in by_measure and by_measure["gross_revenue"][6] is not None:
            kpis.append(Kpi("Forecast error (MAPE)", _percent(by_measure["gross_revenue"][6]), "revenue, backtest"))
    sections = [
        Section("Summary", tables=[summary], notes=notes),
        Section(
            "Monthly trend and forecast",
            chart=_forecast_chart(trend.rows, forecast.rows, month),
            chart_alt="Monthly gross revenue and books sold with the forecast and its 80% interval",
            tables=[trend, forecast],
            notes=forecast_notes,
        ),
        Section(
            "Forecast against actual",
            tables=[backtest, earlier],
            notes=[] if backtest.rows else ["No backtest in marts.sales_forecast_backtest for this forecast."],
        ),
        Section(
            f"{month:%B %Y} day by day",
            chart=_daily_month_chart(daily.rows, month),
            chart_alt=f"Gross revenue per day in {month:%B %Y}",
            tables=[daily],
        ),
        Section(
            "Top books",
            chart=_top_books_chart(top_books, f"in {month:%B %Y}"),
            chart_alt=_top_books_alt(top_books, f"in {month:%B %Y}"),
            tables=[top_books],
        ),
        Section(
            "Customer segments",
            chart=_segments_chart(segments.rows),
            chart_alt="Customers and total sales per RFM segment",
            tables=[segments],
            notes=[caveat],
        ),
        Section(
            "Margin by publisher",
            chart=_publisher_chart(publishers.rows),
            chart_alt="Revenue, gross margin and margin of the top publishers by revenue",
            tables=[publishers],
        ),
        Section(
            "Days to repeat order",
            intro="Customers by their average days between orders (marts.customer_repeat_orders).",
            chart=_repeat_chart(repeat.rows),
            chart_alt="Customers per bucket of average days between orders",
            tables=[repeat],
        ),
    ]
    return Report(
        name=MONTH_END_PREFIX,
        title=f"PacBook month-end report — {month:%B %Y}",
        subtitle=f"Orders placed from {month} to {report_date} (the source's own time), from the marts.",
        kpis=kpis,
        sections=sections,
    )


def _repeat_distribution(conn: psycopg.Connection) -> Table:
    conditions, labels = [], []
    for position, (low, high) in enumerate(REPEAT_BUCKETS, start=1):
        upper = f" and avg_days_between_orders < {high}" if high else ""
        conditions.append(f"when avg_days_between_orders >= {low}{upper} then {position}")
        label = f"{low}–{high} days" if high else f"{low}+ days"
        labels.append(f"({position}, '{label}', {low}, {high or 'null'})")
    buckets, labels = " ".join(conditions), ", ".join(labels)
    return _table(
        conn,
        "month_end_days_to_repeat.csv",
        f"""
        with customers as (
            select case when avg_days_between_orders is null then 0 {buckets} end as position
            from marts.customer_repeat_orders
        ),
        buckets (position, bucket, min_days, max_days_exclusive) as (
            values (0, 'one order only', null::integer, null::integer), {labels}
        )
        select buckets.bucket, buckets.min_days, buckets.max_days_exclusive, count(customers.position) as customers
        from buckets
        left join customers on buckets.position = customers.position
        group by buckets.position, buckets.bucket, buckets.min_days, buckets.max_days_exclusive
        order by buckets.position
        """,
        title="Customers by average days between their orders",
        note="A bucket holds min_days <= average days < max_days_exclusive.",
    )


# --------------------------------------------------------------------------------------- charts


def _figure(width: float = 11, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg renderer: no display, no global pyplot state
    return figure


def _style(axes, title: str) -> None:
    axes.set_title(title, loc="left", fontsize=11, fontweight="bold", color="#222")
    axes.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(labelsize=8.5, colors="#444")


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _empty_chart(message: str) -> str:
    figure = _figure(height=1.4)
    axes = figure.add_subplot()
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#666")
    return _png(figure)


def _daily_trend_chart(rows: Sequence[tuple], report_date: dt.date) -> str:
    if not rows:
        return _empty_chart("No sales days in this period")
    figure = _figure()
    axes = figure.add_subplot()
    days = [row[0] for row in rows]
    gross = [float(row[3]) for row in rows]
    colours = [ACCENT if day == report_date else MUTED for day in days]
    axes.bar(days, gross, color=colours, width=0.8, label="gross revenue")
    axes.plot(days, [float(row[4]) for row in rows], color=SECOND, marker="o", markersize=3, label="net revenue")
    _style(axes, f"Revenue per day — {report_date} highlighted")
    axes.legend(frameon=False, fontsize=8.5, loc="upper left")
    figure.autofmt_xdate()
    return _png(figure)


def _forecast_chart(trend: Sequence[tuple], forecast: Sequence[tuple], month: dt.date) -> str:
    if not trend and not forecast:
        return _empty_chart("No monthly sales yet")
    figure = _figure(height=4.0)
    panels = (("gross_revenue", 3, "Gross revenue per month"), ("quantity", 2, "Books sold per month"))
    for position, (measure, column, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, position)
        months = [row[0] for row in trend]
        axes.plot(months, [float(row[column]) for row in trend], color=ACCENT, marker="o", markersize=3, label="actual")
        ahead = [row for row in forecast if row[1] == measure]
        if ahead:
            future = [row[2] for row in ahead]
            axes.fill_between(
                future, [float(r[4]) for r in ahead], [float(r[5]) for r in ahead], color=BAND, label="80% interval"
            )
            points = [float(r[3]) for r in ahead]
            axes.plot(future, points, color=SECOND, linestyle="--", marker="o", markersize=3, label="forecast")
        current = [row for row in trend if row[0] == month]
        if current:
            ring = {"markersize": 9, "markerfacecolor": "none", "markeredgecolor": ACCENT, "markeredgewidth": 1.6}
            axes.plot([month], [float(current[0][column])], "o", label=f"{month:%B %Y}", **ring)
        _style(axes, title)
        axes.legend(frameon=False, fontsize=8, loc="upper left")
        for label in axes.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    return _png(figure)


def _daily_month_chart(rows: Sequence[tuple], month: dt.date) -> str:
    if not rows:
        return _empty_chart(f"No sales days in {month:%B %Y}")
    figure = _figure(height=3.0)
    axes = figure.add_subplot()
    axes.bar([row[0].day for row in rows], [float(row[3]) for row in rows], color=ACCENT, width=0.8)
    axes.set_xlabel("day of the month", fontsize=8.5, color="#444")
    _style(axes, f"Gross revenue per day, {month:%B %Y}")
    return _png(figure)


def _top_books_alt(table: Table, period: str) -> str:
    if not table.rows:
        return f"Top books by gross revenue {period}: no books sold"
    return f"Top books by gross revenue {period}: the {len(table.rows)} best-selling books, with the number sold"


def _top_books_chart(table: Table, period: str) -> str:
    """The top-books table as bars: gross revenue per book, the best on top, books sold beside each bar."""
    if not table.rows:
        return _empty_chart(f"No books sold {period}")
    return _png(_top_books_figure(table, period))


def _top_books_figure(table: Table, period: str):
    # By column name: the daily table (dwh.fct_sales) and the month's (marts.book_sales_monthly) differ in shape.
    column = {name: position for position, name in enumerate(table.columns)}
    rank, book, title, sold, revenue = (
        column[name] for name in ("rank", "book_id", "title", "quantity", "gross_revenue")
    )
    rows = table.rows[::-1]  # barh draws from the bottom up: rank 1 goes on top
    figure = _figure(height=1.2 + 0.28 * len(rows))
    axes = figure.add_subplot()
    positions = range(len(rows))
    bars = axes.barh(positions, [float(row[revenue]) for row in rows], color=ACCENT, height=0.7)
    # The rank keeps two books of the same title apart; a book missing from dim_book still gets a name.
    names = [f"{row[rank]}. {_shorten(row[title] or f'book {row[book]}', 40)}" for row in rows]
    axes.set_yticks(list(positions), names)
    axes.bar_label(bars, [f"{row[sold]:,} sold" for row in rows], padding=3, fontsize=8, color="#444")
    axes.margins(x=0.12)  # room for the labels at the end of the longest bar
    axes.set_xlabel("Gross revenue", fontsize=8.5, color="#444")
    axes.set_ylabel("Book", fontsize=8.5, color="#444")
    _style(axes, f"Top {len(rows)} books by gross revenue {period}")
    axes.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    axes.grid(axis="y", visible=False)
    return figure


def _segments_chart(rows: Sequence[tuple]) -> str:
    if not rows:
        return _empty_chart("No customers with orders")
    figure = _figure(height=3.4)
    names = [row[0] for row in rows][::-1]
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.barh(names, [row[1] for row in rows][::-1], color=ACCENT)
    right.barh(names, [float(row[2]) for row in rows][::-1], color=SECOND)
    right.set_yticklabels([])
    _style(left, "Customers per segment")
    _style(right, "Total sales per segment")
    for axes in (left, right):
        axes.grid(axis="x", color="#e5e5e5", linewidth=0.8)
        axes.grid(axis="y", visible=False)
    return _png(figure)


def _publisher_chart(rows: Sequence[tuple], top: int = 12) -> str:
    if not rows:
        return _empty_chart("No net sales")
    figure = _figure(height=4.2)
    axes = figure.add_subplot()
    shown = rows[:top]
    names = [_shorten(row[1] or f"publisher {row[0]}", 28) for row in shown]
    positions = range(len(shown))
    width = 0.27
    axes.bar([p - width for p in positions], [float(r[4]) for r in shown], width, color=MUTED, label="revenue")
    axes.bar(positions, [float(r[7]) for r in shown], width, color=ACCENT, label="gross margin (before shipping)")
    axes.bar([p + width for p in positions], [float(r[8]) for r in shown], width, color=SECOND, label="margin")
    axes.axhline(0, color="#666", linewidth=0.8)
    axes.set_xticks(list(positions), names, rotation=30, ha="right")
    _style(axes, f"Top {len(shown)} publishers by revenue")
    axes.legend(frameon=False, fontsize=8, ncols=3, loc="upper right")
    return _png(figure)


def _repeat_chart(rows: Sequence[tuple]) -> str:
    if not rows:
        return _empty_chart("No customers")
    figure = _figure(height=3.0)
    axes = figure.add_subplot()
    colours = [MUTED if row[1] is None else ACCENT for row in rows]
    axes.bar([row[0] for row in rows], [row[3] for row in rows], color=colours)
    _style(axes, "Customers by average days between orders")
    return _png(figure)


# --------------------------------------------------------------------------------------- formatting


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _number(value) -> str:
    return "—" if value is None else f"{value:,}"


def _money(value) -> str:
    return "—" if value is None else f"{Decimal(value):,.2f}"


def _percent(value) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


def _change(value, before, against: str) -> str:
    if before is None or not before:
        return f"no {against} to compare"
    change = (float(value) - float(before)) / float(before)
    return f"{'+' if change >= 0 else ''}{change * 100:.1f}% vs {against}"


PERCENT_COLUMNS = {"mape", "margin_pct", "share_reordered", "share_of_gross_revenue"}


def _cell(column: str, value) -> str:
    if value is None:
        return "—"
    if column in PERCENT_COLUMNS:
        return _percent(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | Decimal):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _is_numeric_column(rows: Sequence[tuple], index: int) -> bool:
    values = [row[index] for row in rows if row[index] is not None]
    return bool(values) and all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in values)


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return str(value)  # Decimal keeps its exact digits


def write_csv(table: Table, folder: Path) -> Path:
    path = folder / table.file
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows([_csv_value(v) for v in row] for row in table.rows)
    return path


def render_html(report: Report, report_date: dt.date, run_id: str | None, generated_at: dt.datetime) -> str:
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
    template = environment.from_string(TEMPLATE_PATH.read_text(encoding="utf-8"))

    def view(table: Table) -> dict:
        limit = len(table.rows) if table.html_rows is None else table.html_rows
        numeric = [_is_numeric_column(table.rows, i) for i in range(len(table.columns))]
        return {
            "title": table.title,
            "file": table.file,
            "note": table.note,
            "columns": [(name.replace("_", " "), numeric[i]) for i, name in enumerate(table.columns)],
            "rows": [
                [
                    (_cell(name, value), numeric[i])
                    for i, (name, value) in enumerate(zip(table.columns, row, strict=True))
                ]
                for row in table.rows[:limit]
            ],
            "total": len(table.rows),
            "shown": min(limit, len(table.rows)),
        }

    return template.render(
        report=report,
        report_date=report_date.isoformat(),
        run_id=run_id or "— (not run by Airflow)",
        generated_at=generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        sections=[{"section": section, "tables": [view(t) for t in section.tables]} for section in report.sections],
        other_page=(
            {"href": "daily.html", "label": "Daily report"}
            if report.name != DAILY_PREFIX
            else {"href": "month_end.html", "label": "Month-end report"}
            if is_month_end(report_date)
            else None
        ),
    )


# --------------------------------------------------------------------------------------- files


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_folder(staging: Path, final: Path) -> None:
    """Puts ``staging`` in place of ``final`` (same parent) so that readers never see a mix of both."""
    if not final.exists():
        os.rename(staging, final)
    elif _exchange(staging, final):
        shutil.rmtree(staging)  # now holds the previous version
    else:  # two renames: for a moment the folder is absent, never half-written
        retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, retired)
        os.rename(staging, final)
        shutil.rmtree(retired)


def atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


Builder = Callable[[psycopg.Connection, dt.date, str | None], Report]


def _owned(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == f"{prefix}.html" or name.startswith(f"{prefix}_") for prefix in prefixes)


def _write_report_folder(
    warehouse_uri: str, report_date: dt.date, reports_dir: Path, run_id: str | None, builders: dict[str, Builder]
) -> dict[str, Path]:
    """Builds the given reports into a fresh copy of the date's folder and swaps it in."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    final = reports_dir / report_date.isoformat()
    for leftover in reports_dir.glob(f".{final.name}.*"):
        log.info("reports: removing left-over %s", leftover.name)
        shutil.rmtree(leftover, ignore_errors=True)
    staging = reports_dir / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        if final.is_dir():  # keep the other report's files of that date
            for existing in final.iterdir():
                if existing.is_file() and not _owned(existing.name, list(builders)):
                    shutil.copy2(existing, staging / existing.name)
        generated_at = dt.datetime.now(dt.UTC)
        with _snapshot(warehouse_uri) as conn:
            reports = {name: build(conn, report_date, run_id) for name, build in builders.items()}
        for name, report in reports.items():
            for table in report.tables:
                write_csv(table, staging)
            (staging / f"{name}.html").write_text(
                render_html(report, report_date, run_id, generated_at), encoding="utf-8"
            )
            log.info("report %s date=%s tables=%d run=%s", name, report_date, len(report.tables), run_id)
        replace_folder(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: final / f"{name}.html" for name in builders}


def write_daily_report(warehouse_uri: str, report_date: dt.date, reports_dir: Path, run_id: str | None = None) -> Path:
    """Writes ``<reports_dir>/<date>/daily.html`` and its ``daily_*.csv``; returns the HTML's path."""
    return _write_report_folder(warehouse_uri, report_date, reports_dir, run_id, {DAILY_PREFIX: build_daily_report})[
        DAILY_PREFIX
    ]


def write_month_end_report(
    warehouse_uri: str, report_date: dt.date, reports_dir: Path, run_id: str | None = None
) -> Path:
    """Writes ``<reports_dir>/<date>/month_end.html`` and its CSVs; ``report_date`` must end a month."""
    if not is_month_end(report_date):
        raise ReportError(f"{report_date} is not the last day of its month: no month-end report for it")
    builders = {MONTH_END_PREFIX: build_month_end_report}
    return _write_report_folder(warehouse_uri, report_date, reports_dir, run_id, builders)[MONTH_END_PREFIX]


def write_reports(
    warehouse_uri: str, report_date: dt.date, reports_dir: Path, run_id: str | None = None
) -> dict[str, Path]:
    """The nightly reports: the daily one always, the month-end one when ``report_date`` ends a month.

    Both are written in one snapshot and one folder swap. Returns report name → HTML path.
    """
    builders: dict[str, Builder] = {DAILY_PREFIX: build_daily_report}
    if is_month_end(report_date):
        builders[MONTH_END_PREFIX] = build_month_end_report
    written = _write_report_folder(warehouse_uri, report_date, reports_dir, run_id, builders)
    write_reports_index(Path(reports_dir))
    return written


def write_reports_index(reports_dir: Path) -> Path:
    """``<reports_dir>/index.html``: every report date, newest first, and the dbt docs when published."""
    import html

    dates = []
    for folder in sorted(reports_dir.iterdir(), reverse=True):
        try:
            dt.date.fromisoformat(folder.name)
        except ValueError:
            continue
        links = [
            f'<a href="{folder.name}/{name}.html">{label}</a>'
            for name, label in ((DAILY_PREFIX, "daily"), (MONTH_END_PREFIX, "month end"))
            if (folder / f"{name}.html").exists()
        ]
        if links:
            dates.append(f"<li><span>{html.escape(folder.name)}</span> {' · '.join(links)}</li>")
    docs = (
        '<p><a href="dbt_docs/index.html">dbt docs: every model, column, test and the lineage graph</a></p>'
        if (reports_dir / "dbt_docs" / "index.html").exists()
        else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PacBook reports</title>
<style>body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:40rem;
color:#222}}li{{margin:.3rem 0}}span{{display:inline-block;width:7rem;font-variant-numeric:tabular-nums}}
a{{color:#1f5fa8}}</style></head>
<body><h1>PacBook reports</h1>{docs}<ul>{"".join(dates) or "<li>No reports yet.</li>"}</ul></body></html>
"""
    path = reports_dir / "index.html"
    atomic_write_text(path, page)
    return path


# --------------------------------------------------------------------------------------- dbt docs


def dbt_docs_target_dir() -> Path:
    """dbt's private target folder for the docs build: never the project's target/ that Cosmos reads."""
    return config.state_dir() / "dbt_docs" / "target"


def publish_dbt_docs(warehouse_uri: str, reports_dir: Path, target_dir: Path | None = None) -> Path:
    """Runs ``dbt docs generate --static`` and publishes its one-file site at ``<reports_dir>/dbt_docs/index.html``."""
    from include.pacbook.dbt_cli import DbtCommandError, dbt_command, dbt_env

    target = Path(target_dir) if target_dir else dbt_docs_target_dir()
    target.mkdir(parents=True, exist_ok=True)
    (target / "static_index.html").unlink(missing_ok=True)
    env = dbt_env(warehouse_uri)  # the connection's role (session_roles.py) and session settings included
    command = dbt_command("docs", "generate", "--static", target=target, log_path=target / "logs")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        log.info("dbt: %s", line.rstrip())
    site = target / "static_index.html"
    if process.wait() != 0 or not site.exists():
        raise DbtCommandError(
            f"dbt docs generate failed (exit {process.returncode}): see dbt's output above in this log"
        )
    published = Path(reports_dir) / "dbt_docs" / "index.html"
    published.parent.mkdir(parents=True, exist_ok=True)
    temporary = published.with_name(f".{published.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(site, temporary)
        os.replace(temporary, published)
    finally:
        temporary.unlink(missing_ok=True)
    catalog = json.loads((target / "catalog.json").read_text())
    log.info("dbt docs published: %s (%d nodes in the catalog)", published, len(catalog.get("nodes", {})))
    return published
