"""Every validation rule on the PacBook source, declared in one place.

A rule is a SQL condition over one staging row (alias ``t``) that is TRUE when the row is bad.
``include.pacbook.validation`` moves such rows from ``staging.<table>`` to ``quarantine.<table>``
after each extraction, parents before children, so an order kept out of the warehouse also keeps
its lines and status events out (they fail their foreign-key rule next).

The rules encode what the business promises, not what the real data happens to contain: its known
quirks (price 0.00, 0 pages, short ISBNs, a 1900-01-01 publication date, several Active addresses,
Returned dated before Delivered) are legitimate and handled by the model (docs/warehouse.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from include.pacbook import config

# PacBook's first sale cannot predate the shop; anything earlier is a broken or defaulted date.
SHOP_OPENED = "2000-01-01"
# No book in the catalogue costs anywhere near this; a larger line price is a typo or a unit mix-up.
MAX_LINE_PRICE = 500
MAX_SHIPPING_COST = 500
EMAIL_SHAPE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# U+FFFD is what a decoder writes for bytes it could not read; C0 controls never belong in names.
BROKEN_TEXT = "[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\ufffd]"


@dataclass(frozen=True)
class Rule:
    table: str
    name: str
    description: str
    # SQL over the staging row ``t``; may use the placeholders {as_of} (when the copy was taken) and
    # {other_rows_in_scope} (a condition on ``o``, another row of the same table, for the key rules).
    violation: str
    parent: str | None = None  # the other staging table a foreign-key rule reads


PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "country": ("country_id",),
    "address_status": ("status_id",),
    "address": ("address_id",),
    "author": ("author_id",),
    "book_language": ("language_id",),
    "publisher": ("publisher_id",),
    "book": ("book_id",),
    "book_author": ("book_id", "author_id"),
    "customer": ("customer_id",),
    "customer_address": ("customer_id", "address_id"),
    "shipping_method": ("method_id",),
    "order_status": ("status_id",),
    "cust_order": ("order_id",),
    "order_line": ("line_id",),
    "order_history": ("history_id",),
}

# (child table, column, parent table, parent column, required): a required reference may not be NULL.
FOREIGN_KEYS = (
    ("address", "country_id", "country", "country_id", False),
    ("book", "language_id", "book_language", "language_id", False),
    ("book", "publisher_id", "publisher", "publisher_id", False),
    ("book_author", "book_id", "book", "book_id", True),
    ("book_author", "author_id", "author", "author_id", True),
    ("customer_address", "customer_id", "customer", "customer_id", True),
    ("customer_address", "address_id", "address", "address_id", True),
    ("customer_address", "status_id", "address_status", "status_id", False),
    ("cust_order", "customer_id", "customer", "customer_id", True),
    ("cust_order", "shipping_method_id", "shipping_method", "method_id", True),
    ("cust_order", "dest_address_id", "address", "address_id", False),
    ("order_line", "order_id", "cust_order", "order_id", True),
    ("order_line", "book_id", "book", "book_id", True),
    ("order_history", "order_id", "cust_order", "order_id", True),
    ("order_history", "status_id", "order_status", "status_id", True),
)

# Text a row is useless without: empty or blank means the source lost it.
REQUIRED_TEXT = {
    "country": ("country_name",),
    "book_language": ("language_code",),
    "order_status": ("status_value",),
    "shipping_method": ("method_name",),
    "book": ("title",),
    "customer": ("email",),
}
# Free text shown to people: must have survived the source's encoding.
DISPLAYED_TEXT = {
    "author": ("author_name",),
    "publisher": ("publisher_name",),
    "book": ("title",),
    "customer": ("first_name", "last_name", "email"),
    "address": ("street_name", "city"),
}


def _key_rules(table: str, keys: tuple[str, ...]) -> list[Rule]:
    key_null = " or ".join(f"t.{k} is null" for k in keys)
    same_key = " and ".join(f"o.{k} = t.{k}" for k in keys)
    label = ", ".join(keys)
    return [
        Rule(table, "key_not_null", f"{label} is NULL", key_null),
        # An exact copy of a row is harmless: the first stays, the copies go.
        Rule(
            table,
            "duplicate_row",
            f"an identical row with the same {label} came earlier",
            f"exists (select 1 from {{staging}} o where {{other_rows_in_scope}} and {same_key} "
            "and o.ctid < t.ctid and to_jsonb(o) = to_jsonb(t))",
        ),
        # Two different rows claiming one key: nothing says which is right, so neither loads.
        Rule(
            table,
            "conflicting_key",
            f"another row with the same {label} differs",
            f"exists (select 1 from {{staging}} o where {{other_rows_in_scope}} and {same_key} "
            "and o.ctid <> t.ctid and to_jsonb(o) <> to_jsonb(t))",
        ),
    ]


def _rules() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for table in config.SOURCE_TABLES:
        rules += _key_rules(table, PRIMARY_KEYS[table])
        for column in REQUIRED_TEXT.get(table, ()):
            rules.append(
                Rule(table, f"{column}_present", f"{column} is NULL or blank", f"btrim(coalesce(t.{column}, '')) = ''")
            )
        for column in DISPLAYED_TEXT.get(table, ()):
            rules.append(
                Rule(
                    table,
                    f"{column}_readable",
                    f"{column} holds undecodable or control characters",
                    f"t.{column} ~ E'{BROKEN_TEXT}'",
                )
            )
        for child, column, parent, parent_column, required in FOREIGN_KEYS:
            if child != table:
                continue
            if required:
                rules.append(Rule(table, f"{column}_present", f"{column} is NULL", f"t.{column} is null"))
            rules.append(
                Rule(
                    table,
                    f"{column}_known",
                    f"{column} names no {parent} row",
                    f"t.{column} is not null and not exists "
                    f"(select 1 from staging.{parent} p where p.{parent_column} = t.{column})",
                    parent=parent,
                )
            )
        rules += _business_rules(table)
    return tuple(rules)


# Event times a fact is dated by: present, not in the future, not before the shop existed.
EVENT_TIMES = {"cust_order": "order_date", "order_history": "status_date"}


def _event_time_rules(table: str, column: str) -> list[Rule]:
    return [
        Rule(table, f"{column}_present", f"{column} is NULL", f"t.{column} is null"),
        Rule(
            table,
            f"{column}_plausible",
            f"{column} is in the future or before the shop opened ({SHOP_OPENED})",
            f"t.{column} > {{as_of}}::timestamp + interval '1 day' or t.{column} < timestamp '{SHOP_OPENED}'",
        ),
    ]


def _business_rules(table: str) -> list[Rule]:
    if table in EVENT_TIMES:
        return _event_time_rules(table, EVENT_TIMES[table])
    if table == "order_line":
        return [
            Rule(table, "price_present", "price is NULL", "t.price is null"),
            Rule(
                table,
                "price_in_range",
                f"price is negative or above {MAX_LINE_PRICE}",
                f"t.price < 0 or t.price > {MAX_LINE_PRICE}",
            ),
        ]
    if table == "shipping_method":
        return [
            Rule(
                table,
                "cost_in_range",
                f"cost is NULL, negative or above {MAX_SHIPPING_COST}",
                f"t.cost is null or t.cost < 0 or t.cost > {MAX_SHIPPING_COST}",
            )
        ]
    if table == "customer":
        return [Rule(table, "email_shape", "email is not shaped like an address", f"t.email !~ '{EMAIL_SHAPE}'")]
    return []


RULES = _rules()


def rules_for(table: str) -> list[Rule]:
    return [rule for rule in RULES if rule.table == table]
