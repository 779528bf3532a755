"""Finds personal data by its values: every text column of a schema compared with the source's customers.

Column names prove nothing (a leak can be called `member` or `label`), so the scan compares values:
the customers' emails, full names and street addresses (number + street) must not occur anywhere,
nor must their first names, last names and street names - except the values that are also ordinary
words of the data (a customer named like an author, a last name that is also a city, a first name
that is also a month), which cannot tell a customer from a book.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# Kinds whose every value identifies a customer: one occurrence is a leak.
IDENTIFYING = ("email", "full_name", "street_address")
# Kinds made of single words that other data can share by chance: a column leaks them when at
# least this many distinct customer values that are no ordinary word of the data occur in it.
SINGLE_WORD = ("first_name", "last_name", "street_name")
SINGLE_WORD_MIN_MATCHES = 2

PERSONAL_VALUES = """
with

customers as (

    select first_name, last_name, email from public.customer

),

addresses as (

    select street_number, street_name from public.address

),

-- every word of the data that is not about a customer, and the calendar's own words
ordinary_words as (

    select lower(author_name) as word from public.author
    union select lower(publisher_name) from public.publisher
    union select lower(title) from public.book
    union select lower(city) from public.address
    union select lower(country_name) from public.country
    union select lower(language_name) from public.book_language
    union select lower(method_name) from public.shipping_method
    union select lower(status_value) from public.order_status
    union select lower(address_status) from public.address_status
    union select lower(trim(to_char(make_date(2000, m, 1), 'Month'))) from generate_series(1, 12) as m
    union select lower(trim(to_char(make_date(2000, 1, d), 'Day'))) from generate_series(1, 7) as d

),

personal as (

    select 'email' as kind, lower(email) as value from customers
    union select 'full_name', lower(concat_ws(' ', first_name, last_name)) from customers
    union select 'street_address', lower(concat_ws(' ', street_number, street_name)) from addresses
    union select 'first_name', lower(first_name) from customers
    union select 'last_name', lower(last_name) from customers
    union select 'street_name', lower(street_name) from addresses

)

select kind, value
from personal
where
    value is not null
    and value != ''
    and (kind in ('email', 'street_address') or value not in (select word from ordinary_words))
"""


@dataclass(frozen=True)
class Finding:
    relation: str
    column: str
    kind: str
    matches: int
    example: str


def personal_values(source_uri: str) -> list[tuple[str, str]]:
    """(kind, lower-cased value) of every customer's personal data in the source."""
    with psycopg.connect(source_uri) as conn:
        return conn.execute(PERSONAL_VALUES).fetchall()


def find_personal_data(
    conn: psycopg.Connection, schemas: tuple[str, ...], personal: list[tuple[str, str]]
) -> list[Finding]:
    """Every text column of every table and view in `schemas` that holds customers' personal values.

    Runs in the caller's transaction, so it also sees tables the caller has not committed.
    """
    conn.execute("drop table if exists pg_temp.personal_values")
    conn.execute("create temporary table personal_values (kind text not null, value text not null)")
    with conn.cursor().copy("copy personal_values (kind, value) from stdin") as copy:
        for row in personal:
            copy.write_row(row)
    conn.execute("create index on personal_values (value)")
    conn.execute("analyze personal_values")
    columns = conn.execute(
        """
        select c.table_schema, c.table_name, c.column_name
        from information_schema.columns as c
        where
            c.table_schema = any(%s)
            and c.data_type in ('text', 'character varying', 'character')
        order by 1, 2, 3
        """,
        (list(schemas),),
    ).fetchall()
    findings = []
    for schema, table, column in columns:
        rows = conn.execute(
            sql.SQL(
                """
                with

                column_values as (

                    select distinct lower({column}) as value from {table} where {column} is not null

                )

                select personal_values.kind, count(distinct column_values.value), min(column_values.value)
                from column_values
                join personal_values on column_values.value = personal_values.value
                group by personal_values.kind
                """
            ).format(column=sql.Identifier(column), table=sql.Identifier(schema, table))
        ).fetchall()
        for kind, matches, example in rows:
            if kind in IDENTIFYING or matches >= SINGLE_WORD_MIN_MATCHES:
                findings.append(Finding(f"{schema}.{table}", column, kind, matches, example))
    return findings
