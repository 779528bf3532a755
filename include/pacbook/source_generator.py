"""Deterministic generator of the PacBook OLTP source database (the "Gravity Bookstore" design).

Why: the warehouse, the data-quality checks and the demand forecast all need a source that looks
and misbehaves like the real shop, at sizes the real dump cannot provide. This module creates the 15
tables of schema ``public`` (DDL in ``source_schema.sql``) and fills them with synthetic rows whose
distributions were measured on the real data (lines per order, prices, status-history patterns and
lags, orders per customer, addresses per customer), plus a growth trend and a yearly seasonality
(peaks in November and December) so that a forecast has something to find.

Scaling (``scale`` = 1 is the real shop):

* customers, addresses, customer addresses, orders, and so order lines and status events, scale
  linearly with ``scale``;
* the catalogue (books, authors, publishers, book_author) scales linearly for ``scale <= 1`` and with
  ``sqrt(scale)`` above 1 -- a shop with 100 times the customers does not sell 100 times the titles;
* countries, languages, statuses and shipping methods are fixed reference data.

Every quirk of the real data is reproduced, at least once even at tiny scales: several Active addresses
per customer, Returned events dated before Delivered, orders without any history, lines priced 0.00,
books with 0 pages, ISBNs shorter than 13 characters, a book published 1900-01-01, titles with a double
space, 'Singapore' under two country ids, ~10% of books without an author, names repeated under
different ids, the same book twice in one order, customers who never ordered, gaps in customer and
book ids, NULL street numbers, and unicode and apostrophes in names.

Same seed, scale and dates give byte-identical data: every table draws from its own numpy generator
seeded by (seed, table), and nothing depends on the clock or on hash ordering. The load is a single
transaction of streamed COPY chunks; keys are built after the load, then the tables are analyzed.

CLI::

    python -m include.pacbook.source_generator --dsn DSN [--scale 1] [--seed 42]
        [--end-date 2024-03-26] [--years 3] [--replace]
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

SCHEMA_FILE = Path(__file__).with_name("source_schema.sql")
CONSTRAINTS_MARKER = "-- section: constraints"

# Load order: parents before children (keys are added after the load, but reading the file top-down
# should still make sense).
TABLES: tuple[str, ...] = (
    "country",
    "address_status",
    "book_language",
    "order_status",
    "shipping_method",
    "publisher",
    "author",
    "book",
    "book_author",
    "address",
    "customer",
    "customer_address",
    "cust_order",
    "order_line",
    "order_history",
)

# Key columns, used to order dumps (tests) and nothing else.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "country": ("country_id",),
    "address_status": ("status_id",),
    "book_language": ("language_id",),
    "order_status": ("status_id",),
    "shipping_method": ("method_id",),
    "publisher": ("publisher_id",),
    "author": ("author_id",),
    "book": ("book_id",),
    "book_author": ("book_id", "author_id"),
    "address": ("address_id",),
    "customer": ("customer_id",),
    "customer_address": ("customer_id", "address_id"),
    "cust_order": ("order_id",),
    "order_line": ("line_id",),
    "order_history": ("history_id",),
}

SEQUENCES: tuple[tuple[str, str, str], ...] = (
    ("cust_order_order_id_seq", "cust_order", "order_id"),
    ("order_line_line_id_seq", "order_line", "line_id"),
    ("order_history_history_id_seq", "order_history", "history_id"),
)

# Sizes of the real shop (scale 1).
REAL_CUSTOMERS = 2000
REAL_ADDRESSES = 1000
REAL_ORDERS = 7550
REAL_BOOKS = 11127
REAL_AUTHORS = 9235
REAL_PUBLISHERS = 2264

COPY_CHUNK_ROWS = 20_000

# ---------------------------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------------------------


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    """Word lists are written as one string: compact to read, easy to extend."""
    return tuple(text.split(sep))


_COUNTRY_NAMES = _words(
    "Afghanistan|Albania|Algeria|Andorra|Angola|Anguilla|Antigua & Barbuda|Argentina|Armenia|"
    "Aruba|Australia|Austria|Azerbaijan|Bahamas|Bahrain|Bangladesh|Barbados|Belarus|Belgium|"
    "Belize|Benin|Bermuda|Bhutan|Bolivia|Bosnia & Herzegovina|Botswana|Brazil|Britain (UK)|"
    "British Indian Ocean Territory|Brunei|Bulgaria|Burkina Faso|Burundi|Cambodia|Cameroon|"
    "Canada|Cape Verde|Cayman Islands|Central African Rep.|Chad|Chile|China|Colombia|Comoros|"
    "Congo (Dem. Rep.)|Congo (Rep.)|Cook Islands|Costa Rica|Croatia|Cuba|Curaçao|Cyprus|"
    "Czech Republic|Côte d'Ivoire|Denmark|Djibouti|Dominica|Dominican Republic|East Timor|"
    "Ecuador|Egypt|El Salvador|Equatorial Guinea|Eritrea|Estonia|Eswatini (Swaziland)|Ethiopia|"
    "Falkland Islands|Faroe Islands|Fiji|Finland|France|French Guiana|French Polynesia|Gabon|"
    "Gambia|Georgia|Germany|Ghana|Gibraltar|Greece|Greenland|Grenada|Guadeloupe|Guam|Guatemala|"
    "Guernsey|Guinea|Guinea-Bissau|Guyana|Haiti|Honduras|Hong Kong|Hungary|Iceland|India|"
    "Indonesia|Iran|Iraq|Ireland|Isle of Man|Israel|Italy|Jamaica|Japan|Jersey|Jordan|Kazakhstan|"
    "Kenya|Kiribati|Korea (North)|Korea (South)|Kuwait|Kyrgyzstan|Laos|Latvia|Lebanon|Lesotho|"
    "Liberia|Libya|Liechtenstein|Lithuania|Luxembourg|Macau|Madagascar|Malawi|Malaysia|Maldives|"
    "Mali|Malta|Marshall Islands|Martinique|Mauritania|Mauritius|Mayotte|Mexico|Micronesia|"
    "Moldova|Monaco|Mongolia|Montenegro|Montserrat|Morocco|Mozambique|Myanmar (Burma)|Namibia|"
    "Nauru|Nepal|Netherlands|New Caledonia|New Zealand|Nicaragua|Niger|Nigeria|North Macedonia|"
    "Northern Mariana Islands|Norway|Oman|Pakistan|Palau|Palestine|Panama|Papua New Guinea|"
    "Paraguay|Peru|Philippines|Poland|Portugal|Puerto Rico|Qatar|Romania|Russia|Rwanda|Réunion|"
    "Samoa (American)|Samoa (western)|San Marino|Sao Tome & Principe|Saudi Arabia|Senegal|Serbia|"
    "Seychelles|Sierra Leone|Singapore|Slovakia|Slovenia|Solomon Islands|Somalia|South Africa|"
    "South Sudan|Spain|Sri Lanka|St Helena|St Kitts & Nevis|St Lucia|St Pierre & Miquelon|"
    "St Vincent|Sudan|Suriname|Sweden|Switzerland|Syria|Taiwan|Tajikistan|Tanzania|Thailand|Togo|"
    "Tonga|Trinidad & Tobago|Tunisia|Turkey|Turkmenistan|Turks & Caicos Is|Tuvalu|Uganda|Ukraine|"
    "United Arab Emirates|United States|Uruguay|Uzbekistan|Vanuatu|Vatican City|Venezuela|"
    "Vietnam|Virgin Islands (UK)|Virgin Islands (US)|Western Sahara|Yemen|Zambia|Zimbabwe|"
    "Åland Islands",
    sep="|",
)
# The real dump lists Singapore twice; the duplicate gets the last id.
COUNTRIES: tuple[str, ...] = (*_COUNTRY_NAMES, "Singapore")

ADDRESS_STATUSES = ((1, "Active"), (2, "Inactive"))
ORDER_STATUSES = (
    (1, "Order Received"),
    (2, "Pending Delivery"),
    (3, "Delivery In Progress"),
    (4, "Delivered"),
    (5, "Cancelled"),
    (6, "Returned"),
)
SHIPPING_METHODS = (
    (1, "Standard", "5.90"),
    (2, "Priority", "8.90"),
    (3, "Express", "11.90"),
    (4, "International", "24.50"),
)
SHIPPING_SHARES = (0.31, 0.27, 0.24, 0.18)

# (code, name, share of books) -- shares measured on the real catalogue.
LANGUAGES: tuple[tuple[str, str, float], ...] = (
    ("eng", "English", 8911),
    ("en-US", "United States English", 1409),
    ("fre", "French", 144),
    ("spa", "Spanish", 218),
    ("en-GB", "British English", 214),
    ("mul", "Multiple Languages", 19),
    ("grc", "Greek", 11),
    ("enm", "Middle English", 3),
    ("en-CA", "Canadian English", 7),
    ("ger", "German", 99),
    ("jpn", "Japanese", 46),
    ("ara", "Arabic", 1),
    ("nl", "Dutch", 1),
    ("zho", "Chinese", 14),
    ("lat", "Latin", 3),
    ("por", "Portuguese", 10),
    ("srp", "Serbian", 1),
    ("ita", "Italian", 5),
    ("rus", "Russian", 2),
    ("msa", "Malaysian", 1),
    ("glg", "Galician", 1),
    ("wel", "Welsh", 1),
    ("swe", "Swedish", 2),
    ("nor", "Norwegian", 1),
    ("tur", "Turkish", 1),
    ("gla", "Gaelic", 1),
    ("ale", "Aleut", 1),
)

# Small built-in word lists: enough variety for realistic names, small enough that names repeat.
FIRST_NAMES = _words(
    "Ava Liam Olivia Noah Emma Oliver Sophia Elijah Isabella James Mia William Amelia Benjamin "
    "Harper Lucas Evelyn Henry Abigail Alexander Emily Daniel Ella Matthew Grace Samuel Chloé Zoë "
    "Łukasz Søren José Siobhán François Björn Renée Mónica Jürgen Ines Aoife Niamh Seán D'Arcy "
    "Ja'Nae Mikołaj Ágnes Dagný Çağla Thérèse Nuño Anaïs Hélène Øystein Raúl Kateřina Ursola "
    "Reidar Carline Ruthanne Wei Hiroshi Yuki Priya Arjun Fatima Omar Kwame Ngozi Lars Ingrid "
    "Mateo Valentina Giulia Marco Tomasz Agnieszka Pedro Lucía Ewan Isla Maeve Declan Rhys Cerys"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones García Miller Davis Rodríguez Martinez Hernández Lopez "
    "Wilson Anderson Taylor Thomas Moore Jackson Martin Lee Thompson White Harris Clark Lewis "
    "O'Brien O'Connor O'Neill D'Angelo D'Souza Müller Schröder Nguyễn Kowalski Dvořák Sørensen "
    "Brontë Lloyd-Jones McAllister MacDonald Purdy Vatini Turbitt Kirsz Kupis Novák Wiśniewski "
    "Žukauskas Çelik Öztürk Ångström Pérez Gonçalves Fernández Janković Łaska Nakamura Tanaka "
    "Kim Park Chen Wang Singh Patel Okafor Mensah Haddad Rossi Bianchi Dubois Lefèvre Fontaine "
    "Becker Fischer Weiß Jensen Nilsson Virtanen Byrne Walsh Murphy Kelly Doyle Quinn Fitzgerald"
)
EMAIL_DOMAINS = _words(
    "example.com mailbox.org gmail.com yahoo.co.uk outlook.com proton.me web.de libero.it "
    "orange.fr bookworm.net readers.io uni-heidelberg.de fastmail.fm icloud.com gmx.at"
)

TITLE_ADJECTIVES = _words(
    "Silent Lost Hidden Broken Golden Last Secret Burning Forgotten Crimson Wild Quiet Endless "
    "Little Dark Bright Frozen Distant Hollow Gentle Savage Invisible Wandering Ancient Modern "
    "Complete Essential Practical Illustrated Unfinished Curious"
)
TITLE_NOUNS = _words(
    "Garden River House Kingdom Road Winter Summer Shadow Light Sea Empire Heart Night Mountain "
    "Storm Island Letters Machine Mirror Dream Journey Promise Secret Crown City Orchard Memory "
    "Harbour Lighthouse Forest Bridge War Silence Voyage Library Daughter Son Queen Witness Atlas"
)
TITLE_TOPICS = _words(
    "Poetry Cooking Gardening Chess Photography Statistics Philosophy Astronomy Economics Sailing "
    "Woodworking Leadership Meditation Databases Cartography Jazz Baking Mythology Architecture"
)
PLACES = _words(
    "Avalon Kraków Zürich Dublin Lisbon Montréal Kyoto Lagos Valparaíso Reykjavík Marrakesh Tromsø "
    "Galway Sevilla Brooklyn Yorkshire Provence Patagonia Bohemia Cornwall Tuscany Saint-Malo"
)
PUBLISHER_WORDS = _words(
    "Penguin Harbour Lantern Quill Orchard Beacon Meridian Ashgrove Riverside Kestrel Northstar "
    "Bluebell Granite Heron Juniper Marlowe Paperback Tidewater Wren Cobalt Foxglove Saffron"
)
PUBLISHER_FORMS = (
    "{w} Press",
    "{w} Books",
    "{w} Publishing",
    "{s} & Sons",
    "{s} & {s2}",
    "{p} University Press",
    "{w} House",
    "Éditions {s}",
    "{w}",
    "{s}'s Classics",
    "{w} Verlag",
    "{w} Editorial",
)
STREET_SUFFIXES = (
    "Avenue",
    "Street",
    "Road",
    "Lane",
    "Way",
    "Court",
    "Place",
    "Terrace",
    "Junction",
    "Drive",
    "Parkway",
    "Crossing",
    "Circle",
    "Trail",
    "Hill",
    "Pass",
)
STREET_WORDS = _words(
    "Glacier Hill|Dottie|Ramsey|Thackeray|Park|Oak|Maple|Elm|Cedar|Birch|Willow|Pine|Sunset|"
    "Sunnyside|Lakeview|Riverside|Meadow|Harbor|Bridge|Mill|Church|Station|Market|King's|"
    "Queen's|St. Mary's|Rue de l'Église|Königsallee|Ulica Łąkowa|Calle Mayor|Via Roma|Spring|"
    "Autumn Leaf|Forest|Valley|Ridge|Summit|Orchard|Prairie Rose|Northfield|Southridge|Westend",
    sep="|",
)
CITY_ROOTS = (
    "Bel",
    "Ash",
    "Kings",
    "Mar",
    "Nor",
    "Wes",
    "Sal",
    "Ro",
    "Lin",
    "Cay",
    "Tor",
    "Ngu",
    "Bra",
    "Vel",
    "Ost",
    "San",
    "Kil",
    "Dun",
    "Jār",
    "Zé",
    "Mül",
    "Kō",
    "Ís",
    "Ca",
)
CITY_ENDINGS = (
    "ford",
    "ton",
    "bury",
    "ville",
    "haven",
    "mouth",
    "field",
    "dale",
    "berg",
    "stad",
    "ambe",
    "ndas",
    "runga",
    "heim",
    "ów",
    "ópolis",
    "ąc",
    "øy",
    "gård",
    "ville-sur-Mer",
)
CITY_PREFIXES = ("", "", "", "", "", "Port ", "San ", "New ", "Nova ", "Bad ", "Saint-", "Al ")

# Status-history patterns and their shares, measured on the real data (status ids as above).
# "Returned" appears before "Delivered" in every real returned order; most of ours do the same and a
# few return normally, days after delivery.
RECEIVED, PENDING, IN_PROGRESS, DELIVERED, CANCELLED, RETURNED = 1, 2, 3, 4, 5, 6
HISTORY_PATTERNS: tuple[tuple[tuple[int, ...], float], ...] = (
    ((1, 2, 3, 4), 0.4370),  # delivered
    ((1, 2), 0.3708),  # tracking stopped at "pending delivery"
    ((1, 2, 3), 0.0662),  # tracking stopped at "in progress"
    ((1,), 0.0590),  # only received
    ((1, 5), 0.0397),  # cancelled
    ((1, 6, 2, 3, 4), 0.0200),  # returned, dated before delivery (the real quirk)
    ((1, 2, 6, 3, 4), 0.0024),
    ((1, 2, 3, 6, 4), 0.0006),
    ((1, 2, 3, 4, 6), 0.0036),  # returned normally, after delivery
    ((), 0.0007),  # no history at all
)
PATTERN_DELIVERED = 0
PATTERN_CANCELLED = 4
PATTERN_RETURNED_EARLY = 5
PATTERN_RETURNED_NORMALLY = 8
PATTERN_NO_HISTORY = 9

# Lag before a status, by (previous status, status): (median hours, log-sigma, min hours, max hours).
STATUS_LAGS: dict[tuple[int, int], tuple[float, float, float, float]] = {
    (1, 2): (21.0, 0.45, 0.001, 43.4),
    (2, 3): (14.0, 0.45, 0.003, 28.4),
    (3, 4): (62.7, 0.35, 0.02, 126.6),
    (1, 5): (5.1, 0.6, 0.003, 10.0),
    (1, 6): (4.8, 0.6, 0.01, 9.3),
    (2, 6): (2.5, 0.6, 0.16, 6.8),
    (3, 6): (2.0, 0.3, 1.7, 2.3),
    (6, 2): (19.3, 0.4, 0.08, 40.7),
    (6, 3): (17.6, 0.3, 0.78, 25.4),
    (6, 4): (45.2, 0.4, 9.9, 80.6),
    (4, 6): (160.0, 0.6, 48.0, 720.0),
}

# Order mix: lines per order (real shares) and yearly / weekly rhythm of demand.
LINES_PER_ORDER = ((1, 0.2656), (2, 0.4723), (3, 0.2209), (4, 0.0393), (5, 0.0017), (6, 0.0002))
MONTH_FACTORS = (0.88, 0.80, 0.92, 0.94, 0.97, 0.93, 0.95, 0.98, 1.00, 1.06, 1.38, 1.62)
WEEKDAY_FACTORS = (1.02, 0.98, 0.97, 1.00, 1.06, 0.95, 1.08)  # Monday .. Sunday
HOUR_FACTORS = (
    0.3,
    0.2,
    0.15,
    0.1,
    0.1,
    0.2,
    0.5,
    0.9,
    1.2,
    1.3,
    1.3,
    1.4,
    1.6,
    1.5,
    1.3,
    1.2,
    1.2,
    1.3,
    1.5,
    1.8,
    2.0,
    1.9,
    1.4,
    0.8,
)
YEARLY_GROWTH = 0.18
NEVER_ORDERING_SHARE = 0.08

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR


class SourceNotEmptyError(RuntimeError):
    """Raised instead of overwriting a source that already holds data (pass replace=True to overwrite)."""

    def __init__(self, table: str) -> None:
        super().__init__(f"source table public.{table} already holds rows; pass replace=True to overwrite it")
        self.table = table


@dataclass(frozen=True)
class SourceSize:
    """How many rows of each scaled entity to generate (the rest follows from distributions)."""

    customers: int
    addresses: int
    orders: int
    books: int
    authors: int
    publishers: int


def source_size(scale: float) -> SourceSize:
    """Translate a scale into entity counts; the minimums keep every quirk representable at tiny scales."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    catalogue = scale if scale <= 1 else math.sqrt(scale)
    return SourceSize(
        customers=max(10, round(REAL_CUSTOMERS * scale)),
        addresses=max(5, round(REAL_ADDRESSES * scale)),
        orders=max(25, round(REAL_ORDERS * scale)),
        books=max(20, round(REAL_BOOKS * catalogue)),
        authors=max(10, round(REAL_AUTHORS * catalogue)),
        publishers=max(5, round(REAL_PUBLISHERS * catalogue)),
    )


def _rng(seed: int, part: str) -> np.random.Generator:
    """One independent random stream per table, so that changing one table never shifts another."""
    return np.random.default_rng([seed % 2**63, zlib.crc32(part.encode())])


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: object) -> str:
    """One value in COPY text format (NULL as \\N, specials escaped)."""
    if value is None:
        return "\\N"
    return str(value).translate(_COPY_ESCAPES)


def _text_lines(rows: Iterable[Sequence[object]]) -> Iterator[str]:
    """COPY text lines for tables with free text (escaping every field is fine for these sizes)."""
    for row in rows:
        yield "\t".join(_copy_field(value) for value in row) + "\n"


def _shares(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Normalise weights into probabilities."""
    array = np.asarray(weights, dtype=float)
    return array / array.sum()


def _popularity(rng: np.random.Generator, n: int, exponent: float, offset: float) -> np.ndarray:
    """Zipf-like shares in random order: a few best sellers / prolific authors, a long tail."""
    ranks = rng.permutation(n)
    return _shares(1.0 / (ranks + offset) ** exponent)


def _ids_with_gaps(rng: np.random.Generator, n: int, gap_rate: float) -> np.ndarray:
    """Ascending ids starting at 1 with some skipped ids (deleted rows in the real shop)."""
    steps = 1 + (rng.random(n) < gap_rate) * rng.integers(1, 4, n)
    steps[0] = 1
    if n > 2:
        steps[n // 2] = 3  # at least one gap, whatever the draw
    return np.cumsum(steps)


def _force_some(flags: np.ndarray, rng: np.random.Generator, at_least: int = 1) -> np.ndarray:
    """Make sure a rare quirk appears: set random positions until `at_least` flags are true."""
    missing = at_least - int(flags.sum())
    if missing > 0:
        candidates = np.flatnonzero(~flags)
        flags[rng.choice(candidates, size=min(missing, len(candidates)), replace=False)] = True
    return flags


def _ensure_repeated(names: list[str]) -> list[str]:
    """The real data repeats author, publisher and title names under different ids; keep at least one."""
    if len(set(names)) == len(names) and len(names) > 2:
        names[-1] = names[1]
    return names


def _timestamps_text(microseconds: np.ndarray) -> list[str]:
    """Format epoch microseconds as timestamp literals, vectorised (millions of rows at scale 100)."""
    text = np.datetime_as_string(microseconds.astype("datetime64[us]"), unit="us")
    return text.tolist()


def _epoch_us(day: datetime.date) -> int:
    """Microseconds since 1970-01-01 at the start of `day`."""
    return (day - datetime.date(1970, 1, 1)).days * US_PER_DAY


def _years_before(day: datetime.date, years: int) -> datetime.date:
    """Same calendar day `years` earlier (28 February stands in for 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


# ---------------------------------------------------------------------------------------------
# Reference tables
# ---------------------------------------------------------------------------------------------


def country_rows() -> list[tuple[object, ...]]:
    """Fixed list of countries, Singapore twice like the real dump."""
    return [(i, name) for i, name in enumerate(COUNTRIES, start=1)]


def book_language_rows() -> list[tuple[object, ...]]:
    """The 27 languages of the real catalogue."""
    return [(i, code, name) for i, (code, name, _) in enumerate(LANGUAGES, start=1)]


# ---------------------------------------------------------------------------------------------
# Catalogue: publishers, authors, books, book_author
# ---------------------------------------------------------------------------------------------


def _person_name(rng: np.random.Generator) -> str:
    """A first name, sometimes an initial, and a last name."""
    first = FIRST_NAMES[rng.integers(len(FIRST_NAMES))]
    last = LAST_NAMES[rng.integers(len(LAST_NAMES))]
    roll = rng.random()
    if roll < 0.18:
        return f"{first} {chr(65 + rng.integers(26))}. {last}"
    if roll < 0.21:
        return f"{chr(65 + rng.integers(26))}. {first} {last}"
    return f"{first} {last}"


def publisher_names(seed: int, n: int) -> list[str]:
    """Publisher names from a few forms; repeats happen as in the real dump."""
    rng = _rng(seed, "publisher")
    names = []
    for _ in range(n):
        form = PUBLISHER_FORMS[rng.integers(len(PUBLISHER_FORMS))]
        names.append(
            form.format(
                w=PUBLISHER_WORDS[rng.integers(len(PUBLISHER_WORDS))],
                s=LAST_NAMES[rng.integers(len(LAST_NAMES))],
                s2=LAST_NAMES[rng.integers(len(LAST_NAMES))],
                p=PLACES[rng.integers(len(PLACES))],
            )
        )
    return _ensure_repeated(names)


def author_names(seed: int, n: int) -> list[str]:
    """Author names; the first ones carry apostrophes and diacritics for sure."""
    rng = _rng(seed, "author")
    names = [_person_name(rng) for _ in range(n)]
    names[0] = "Siobhán O'Connor"
    return _ensure_repeated(names)


def _book_title(rng: np.random.Generator) -> str:
    """A plausible book title from a handful of templates."""
    adj = TITLE_ADJECTIVES[rng.integers(len(TITLE_ADJECTIVES))]
    noun = TITLE_NOUNS[rng.integers(len(TITLE_NOUNS))]
    noun2 = TITLE_NOUNS[rng.integers(len(TITLE_NOUNS))]
    topic = TITLE_TOPICS[rng.integers(len(TITLE_TOPICS))]
    place = PLACES[rng.integers(len(PLACES))]
    first = FIRST_NAMES[rng.integers(len(FIRST_NAMES))]
    template = rng.integers(12)
    title = (
        f"The {adj} {noun}",
        f"{noun} of {place}",
        f"The {noun} of the {adj} {noun2}",
        f"{topic} for Beginners",
        f"The {adj} {noun}: A Novel",
        f"{first}'s {noun}",
        f"The Complete Guide to {topic}",
        f"{noun}s and {noun2}s",
        f"Letters from {place}",
        f"{adj} {noun}, {adj} {noun2}",
        f"A History of {topic} in {place}",
        f"The {noun} Trilogy (Vol. {rng.integers(1, 4)})",
    )[template]
    return title


def book_titles(seed: int, n: int) -> list[str]:
    """Titles; about 4% carry the double space the real dump has (a comma lost on import)."""
    rng = _rng(seed, "book_title")
    titles = [_book_title(rng) for _ in range(n)]
    double = _force_some(rng.random(n) < 0.04, rng)
    for i in np.flatnonzero(double):
        head, _, tail = titles[i].partition(" ")
        titles[i] = f"{head}  {tail}" if tail else f"{head}  {head}"
    return _ensure_repeated(titles)


@dataclass(frozen=True)
class Catalogue:
    """Book ids and prices, needed again for the order lines."""

    book_ids: np.ndarray
    list_price_cents: np.ndarray
    popularity: np.ndarray


def _isbn13(rng: np.random.Generator, n: int) -> list[str]:
    """ISBN-13s; about 0.25% lost their 978 prefix and leading zeros (shorter than 13, as in the dump)."""
    prefix = np.where(rng.random(n) < 0.9, "978", "979")
    body = rng.integers(0, 10**10, n)
    isbns = [f"{p}{b:010d}" for p, b in zip(prefix.tolist(), body.tolist(), strict=True)]
    short = _force_some(rng.random(n) < 0.0025, rng)
    for i in np.flatnonzero(short):
        isbns[i] = str(int(isbns[i][2 + rng.integers(2) :])) or "0"
    return isbns


def _num_pages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pages: lognormal around 300, capped; 0.7% zero like the real catalogue."""
    pages = np.clip(np.round(299 * np.exp(0.65 * rng.standard_normal(n))), 12, 6576).astype(np.int64)
    pages[_force_some(rng.random(n) < 0.007, rng)] = 0
    return pages


def _publication_dates(rng: np.random.Generator, n: int, end_date: datetime.date) -> list[str]:
    """Publication dates skewed to recent decades, ending ~4 years before the orders; one 1900-01-01."""
    latest = end_date - datetime.timedelta(days=1456)
    earliest = datetime.date(1920, 1, 1)
    span = (latest - earliest).days
    back = np.minimum(rng.exponential(12 * 365.25, n).astype(np.int64), span)
    dates = [(latest - datetime.timedelta(days=int(d))).isoformat() for d in back]
    dates[int(rng.integers(n))] = "1900-01-01"
    return dates


def _list_prices_cents(rng: np.random.Generator, n: int) -> np.ndarray:
    """List prices: many cheap paperbacks, a flat band up to 20.00 (the real price histogram)."""
    cheap = 20 * rng.beta(1.0, 3.0, n)
    flat = rng.uniform(0.5, 20.0, n)
    price = np.where(rng.random(n) < 0.6, cheap, flat)
    return np.clip(np.round(price * 100), 1, 2000).astype(np.int64)


def book_rows(seed: int, size: SourceSize, end_date: datetime.date) -> tuple[list[tuple[object, ...]], Catalogue]:
    """All book rows plus what the orders need to know about the catalogue."""
    rng = _rng(seed, "book")
    n = size.books
    ids = _ids_with_gaps(rng, n, 0.004)
    titles = book_titles(seed, n)
    isbns = _isbn13(rng, n)
    languages = rng.choice(len(LANGUAGES), n, p=_shares([w for *_, w in LANGUAGES])) + 1
    pages = _num_pages(rng, n)
    dates = _publication_dates(rng, n, end_date)
    publishers = rng.choice(size.publishers, n, p=_popularity(rng, size.publishers, 0.9, 3.0)) + 1
    rows = list(
        zip(ids.tolist(), titles, isbns, languages.tolist(), pages.tolist(), dates, publishers.tolist(), strict=True)
    )
    catalogue = Catalogue(
        book_ids=ids,
        list_price_cents=_list_prices_cents(rng, n),
        popularity=_popularity(rng, n, 0.8, 5.0),
    )
    return rows, catalogue


AUTHORS_PER_BOOK = (
    (0, 0.096),
    (1, 0.542),
    (2, 0.24),
    (3, 0.0775),
    (4, 0.019),
    (5, 0.0067),
    (6, 0.0058),
    (8, 0.005),
    (12, 0.004),
    (20, 0.003),
    (30, 0.0013),
)


def book_author_rows(seed: int, size: SourceSize, book_ids: np.ndarray) -> list[tuple[int, int]]:
    """Authorship links: ~10% of books have no author, a few anthologies have dozens."""
    rng = _rng(seed, "book_author")
    n = len(book_ids)
    counts = np.array([k for k, _ in AUTHORS_PER_BOOK])[
        rng.choice(len(AUTHORS_PER_BOOK), n, p=_shares([s for _, s in AUTHORS_PER_BOOK]))
    ]
    if not (counts == 0).any():
        counts[rng.integers(n)] = 0
    authors = rng.choice(size.authors, int(counts.sum()), p=_popularity(rng, size.authors, 0.5, 2.0))
    books = np.repeat(np.arange(n), counts)
    pairs = np.unique(books.astype(np.int64) * size.authors + authors)
    book_of_pair, author_of_pair = book_ids[pairs // size.authors], pairs % size.authors + 1
    return list(zip(book_of_pair.tolist(), author_of_pair.tolist(), strict=True))


# ---------------------------------------------------------------------------------------------
# Customers and addresses
# ---------------------------------------------------------------------------------------------


def address_rows(seed: int, size: SourceSize) -> list[tuple[object, ...]]:
    """Postal addresses around the world; ~2% have no street number (NULL)."""
    rng = _rng(seed, "address")
    n = size.addresses
    no_number = _force_some(rng.random(n) < 0.02, rng)
    numbers = np.floor(10 ** rng.uniform(0, 4.3, n)).astype(np.int64)
    countries = rng.choice(len(COUNTRIES), n, p=_popularity(rng, len(COUNTRIES), 0.7, 4.0)) + 1
    rows = []
    for i in range(n):
        street = (
            f"{STREET_WORDS[rng.integers(len(STREET_WORDS))]} {STREET_SUFFIXES[rng.integers(len(STREET_SUFFIXES))]}"
        )
        city = (
            CITY_PREFIXES[rng.integers(len(CITY_PREFIXES))]
            + CITY_ROOTS[rng.integers(len(CITY_ROOTS))]
            + CITY_ENDINGS[rng.integers(len(CITY_ENDINGS))]
        )
        number = None if no_number[i] else str(numbers[i])
        rows.append((i + 1, number, street, city, int(countries[i])))
    return rows


def _email(rng: np.random.Generator, first: str, last: str) -> str:
    """Email in one of the usual shapes; keeps the apostrophes and diacritics of the name."""
    local_first, local_last = first.lower(), last.lower().replace(" ", "")
    shape = rng.integers(4)
    if shape == 0:
        local = f"{local_first[0]}{local_last}{rng.integers(100)}"
    elif shape == 1:
        local = f"{local_first}.{local_last}"
    elif shape == 2:
        local = f"{local_first}{rng.integers(1950, 2006)}"
    else:
        local = f"{local_last}.{local_first[0]}"
    return f"{local}@{EMAIL_DOMAINS[rng.integers(len(EMAIL_DOMAINS))]}"


def customer_rows(seed: int, size: SourceSize) -> list[tuple[object, ...]]:
    """Customers, ids with gaps (deleted accounts); the first two are Zoë O'Brien and Łukasz Müller."""
    rng = _rng(seed, "customer")
    ids = _ids_with_gaps(rng, size.customers, 0.005)
    rows = []
    for i, customer_id in enumerate(ids.tolist()):
        first = FIRST_NAMES[rng.integers(len(FIRST_NAMES))]
        last = LAST_NAMES[rng.integers(len(LAST_NAMES))]
        if i == 0:
            first, last = "Zoë", "O'Brien"
        elif i == 1:
            first, last = "Łukasz", "Müller"
        rows.append((customer_id, first, last, _email(rng, first, last)))
    return rows


ADDRESSES_PER_CUSTOMER = ((1, 0.62), (2, 0.275), (3, 0.01), (4, 0.065), (5, 0.01), (6, 0.005), (8, 0.015))


@dataclass(frozen=True)
class CustomerAddresses:
    """Each customer's addresses as a slice of one array (customer index -> offset, count)."""

    address_ids: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray


def customer_address_rows(
    seed: int, size: SourceSize, customer_ids: np.ndarray
) -> tuple[list[tuple[int, int, int]], CustomerAddresses]:
    """Links customer -> address (shared addresses are common); most extra addresses stay Active."""
    rng = _rng(seed, "customer_address")
    n = len(customer_ids)
    wanted = np.array([k for k, _ in ADDRESSES_PER_CUSTOMER])[
        rng.choice(len(ADDRESSES_PER_CUSTOMER), n, p=_shares([s for _, s in ADDRESSES_PER_CUSTOMER]))
    ]
    wanted = np.minimum(wanted, size.addresses)
    owners = np.repeat(np.arange(n), wanted)
    addresses = rng.integers(0, size.addresses, len(owners))
    # The first customer always has two distinct addresses, so "several addresses" exists at any scale.
    owners = np.concatenate(([0, 0], owners))
    addresses = np.concatenate(([addresses[0], (addresses[0] + 1) % size.addresses], addresses))
    keys = np.unique(owners.astype(np.int64) * size.addresses + addresses)
    owner, address = keys // size.addresses, keys % size.addresses + 1
    first_of_owner = np.ones(len(keys), dtype=bool)
    first_of_owner[1:] = owner[1:] != owner[:-1]
    active = first_of_owner | (rng.random(len(keys)) < 0.7)
    counts = np.bincount(owner, minlength=n)
    if not np.any(np.bincount(owner, weights=active, minlength=n) >= 2):
        active[owner == 0] = True
    status = np.where(active, 1, 2)
    rows = list(zip(customer_ids[owner].tolist(), address.tolist(), status.tolist(), strict=True))
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return rows, CustomerAddresses(address_ids=address, offsets=offsets, counts=counts)


# ---------------------------------------------------------------------------------------------
# Orders, lines, history
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orders:
    """Orders sorted by date (order_id = position + 1), with what lines and history need."""

    placed_us: np.ndarray
    customer_ids: np.ndarray
    shipping_method_ids: np.ndarray
    dest_address_ids: np.ndarray


def order_window(end_date: datetime.date, years: int) -> tuple[int, int]:
    """[start, horizon) in epoch microseconds: `years` years ending with the whole of end_date."""
    start = _years_before(end_date, years) + datetime.timedelta(days=1)
    return _epoch_us(start), _epoch_us(end_date + datetime.timedelta(days=1))


def daily_demand(end_date: datetime.date, years: int) -> np.ndarray:
    """Relative order intake per day: yearly growth x month-of-year seasonality x weekday rhythm."""
    start_us, horizon_us = order_window(end_date, years)
    n_days = (horizon_us - start_us) // US_PER_DAY
    first = datetime.date(1970, 1, 1) + datetime.timedelta(days=start_us // US_PER_DAY)
    days = [first + datetime.timedelta(days=d) for d in range(n_days)]
    elapsed_years = np.arange(n_days) / 365.25
    month = np.array([MONTH_FACTORS[d.month - 1] for d in days])
    weekday = np.array([WEEKDAY_FACTORS[d.weekday()] for d in days])
    return (1 + YEARLY_GROWTH) ** elapsed_years * month * weekday


def orders_per_customer(rng: np.random.Generator, n_customers: int, n_orders: int) -> np.ndarray:
    """How many orders each customer places: ~8% never order, every buyer orders at least once,
    the rest follows a heavy tail (a few loyal customers with dozens of orders, as in the real shop)."""
    never = _force_some(rng.random(n_customers) < NEVER_ORDERING_SHARE, rng)
    if never.all():
        never[0] = False
    buyers = np.flatnonzero(~never)
    counts = np.zeros(n_customers, dtype=np.int64)
    if n_orders <= len(buyers):
        counts[rng.choice(buyers, n_orders, replace=False)] = 1
        return counts
    counts[buyers] = 1
    appetite = _shares(np.exp(1.0 * rng.standard_normal(len(buyers))))
    counts[buyers] += rng.multinomial(n_orders - len(buyers), appetite)
    return counts


def generate_orders(
    seed: int,
    size: SourceSize,
    end_date: datetime.date,
    years: int,
    customer_ids: np.ndarray,
    addresses: CustomerAddresses,
) -> Orders:
    """Order headers: when (trend + seasonality + hour of day), who, how shipped, where to."""
    rng = _rng(seed, "cust_order")
    n = size.orders
    start_us, _ = order_window(end_date, years)
    day = rng.choice(len(demand := daily_demand(end_date, years)), n, p=_shares(demand))
    hour = rng.choice(24, n, p=_shares(HOUR_FACTORS))
    placed = start_us + day * US_PER_DAY + hour * US_PER_HOUR + rng.integers(0, US_PER_HOUR, n)
    placed.sort()
    # Each customer's orders land on random dates: repeat buyers get irregular gaps between orders.
    per_customer = orders_per_customer(rng, len(customer_ids), n)
    buyer = rng.permutation(np.repeat(np.arange(len(customer_ids)), per_customer))
    pick = addresses.offsets[buyer] + np.floor(rng.random(n) * addresses.counts[buyer]).astype(np.int64)
    shipping = rng.choice(len(SHIPPING_METHODS), n, p=_shares(SHIPPING_SHARES)) + 1
    return Orders(
        placed_us=placed,
        customer_ids=customer_ids[buyer],
        shipping_method_ids=shipping,
        dest_address_ids=addresses.address_ids[pick],
    )


def cust_order_lines(orders: Orders) -> Iterator[str]:
    """COPY text for cust_order (numbers and timestamps only: no escaping needed)."""
    stamps = _timestamps_text(orders.placed_us)
    for i, (stamp, customer, method, address) in enumerate(
        zip(
            stamps,
            orders.customer_ids.tolist(),
            orders.shipping_method_ids.tolist(),
            orders.dest_address_ids.tolist(),
            strict=True,
        ),
        start=1,
    ):
        yield f"{i}\t{stamp}\t{customer}\t{method}\t{address}\n"


def order_line_lines(seed: int, orders: Orders, catalogue: Catalogue) -> Iterator[str]:
    """COPY text for order_line: 1-6 books per order, popular books sell more, some promos, rare 0.00."""
    rng = _rng(seed, "order_line")
    n_orders = len(orders.placed_us)
    per_order = np.array([k for k, _ in LINES_PER_ORDER])[
        rng.choice(len(LINES_PER_ORDER), n_orders, p=_shares([s for _, s in LINES_PER_ORDER]))
    ]
    if not (per_order >= 2).any():
        per_order[0] = 2
    order_ids = np.repeat(np.arange(1, n_orders + 1), per_order)
    n = len(order_ids)
    book = rng.choice(len(catalogue.book_ids), n, p=catalogue.popularity)
    # The same book twice in one order (two lines), as in the real data.
    first_multi = int(np.flatnonzero(per_order >= 2)[0])
    first_line = int(per_order[:first_multi].sum())
    book[first_line + 1] = book[first_line]
    promo = np.where(rng.random(n) < 0.2, rng.uniform(0.7, 0.95, n), 1.0)
    cents = np.round(catalogue.list_price_cents[book] * promo).astype(np.int64)
    cents[_force_some(rng.random(n) < 0.0006, rng)] = 0
    book_ids = catalogue.book_ids[book].tolist()
    for line_id, (order_id, book_id, c) in enumerate(
        zip(order_ids.tolist(), book_ids, cents.tolist(), strict=True), start=1
    ):
        yield f"{line_id}\t{order_id}\t{book_id}\t{c // 100}.{c % 100:02d}\n"


def _lags_us(rng: np.random.Generator, transition: tuple[int, int], n: int) -> np.ndarray:
    """Time between two statuses, lognormal around the real median, clipped to the real range."""
    median, sigma, low, high = STATUS_LAGS[transition]
    hours = np.clip(median * np.exp(sigma * rng.standard_normal(n)), low, high)
    return np.round(hours * US_PER_HOUR).astype(np.int64)


def _history_patterns(rng: np.random.Generator, placed_us: np.ndarray, horizon_us: int) -> np.ndarray:
    """Pick a history pattern per order; rare patterns are forced onto old orders so they always appear."""
    n = len(placed_us)
    pattern = rng.choice(len(HISTORY_PATTERNS), n, p=_shares([s for _, s in HISTORY_PATTERNS]))
    old_enough = placed_us < horizon_us - 45 * US_PER_DAY
    for wanted in (
        PATTERN_NO_HISTORY,
        PATTERN_RETURNED_EARLY,
        PATTERN_RETURNED_NORMALLY,
        PATTERN_CANCELLED,
        PATTERN_DELIVERED,
    ):
        if (pattern[old_enough] == wanted).any():
            continue
        spare = np.flatnonzero(old_enough & np.isin(pattern, (1, 2, 3)))  # plain, frequent patterns
        if len(spare):
            pattern[spare[rng.integers(len(spare))]] = wanted
    return pattern


def order_history_lines(seed: int, orders: Orders, end_date: datetime.date, years: int) -> Iterator[str]:
    """COPY text for order_history: status chains with real lags, cut at the end of end_date."""
    rng = _rng(seed, "order_history")
    _, horizon_us = order_window(end_date, years)
    placed = orders.placed_us
    pattern = _history_patterns(rng, placed, horizon_us)
    received = placed + rng.integers(3_000_000, 12 * US_PER_HOUR, len(placed))
    order_idx, statuses, stamps, steps = [], [], [], []
    for p, (chain, _) in enumerate(HISTORY_PATTERNS):
        members = np.flatnonzero(pattern == p)
        if not chain or not len(members):
            continue
        at = received[members]
        previous = chain[0]
        for step, status in enumerate(chain):
            if step:
                at = at + _lags_us(rng, (previous, status), len(members))
            order_idx.append(members)
            statuses.append(np.full(len(members), status))
            stamps.append(at)
            steps.append(np.full(len(members), step))
            previous = status
    order_idx_a, status_a = np.concatenate(order_idx), np.concatenate(statuses)
    stamp_a, step_a = np.concatenate(stamps), np.concatenate(steps)
    happened = stamp_a < horizon_us  # chains are increasing in time, so this cuts whole tails
    order_idx_a, status_a, stamp_a, step_a = (a[happened] for a in (order_idx_a, status_a, stamp_a, step_a))
    chronological = np.lexsort((step_a, order_idx_a, stamp_a))  # history ids follow time, like a sequence
    text = _timestamps_text(stamp_a[chronological])
    for history_id, (order, status, stamp) in enumerate(
        zip((order_idx_a[chronological] + 1).tolist(), status_a[chronological].tolist(), text, strict=True), start=1
    ):
        yield f"{history_id}\t{order}\t{status}\t{stamp}\n"


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

COLUMNS: dict[str, tuple[str, ...]] = {
    "country": ("country_id", "country_name"),
    "address_status": ("status_id", "address_status"),
    "book_language": ("language_id", "language_code", "language_name"),
    "order_status": ("status_id", "status_value"),
    "shipping_method": ("method_id", "method_name", "cost"),
    "publisher": ("publisher_id", "publisher_name"),
    "author": ("author_id", "author_name"),
    "book": ("book_id", "title", "isbn13", "language_id", "num_pages", "publication_date", "publisher_id"),
    "book_author": ("book_id", "author_id"),
    "address": ("address_id", "street_number", "street_name", "city", "country_id"),
    "customer": ("customer_id", "first_name", "last_name", "email"),
    "customer_address": ("customer_id", "address_id", "status_id"),
    "cust_order": ("order_id", "order_date", "customer_id", "shipping_method_id", "dest_address_id"),
    "order_line": ("line_id", "order_id", "book_id", "price"),
    "order_history": ("history_id", "order_id", "status_id", "status_date"),
}


def copy_into(cur: psycopg.Cursor, table: str, lines: Iterable[str]) -> int:
    """Stream COPY text lines into a table in chunks; returns the number of rows written.

    FREEZE is allowed because the table was created in this very transaction, and saves the
    first vacuum of a freshly generated source.
    """
    statement = sql.SQL("copy {} ({}) from stdin with (freeze)").format(
        sql.Identifier("public", table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table]))
    )
    rows = 0
    chunk: list[str] = []
    with cur.copy(statement) as copy:
        for line in lines:
            chunk.append(line)
            if len(chunk) >= COPY_CHUNK_ROWS:
                copy.write("".join(chunk))
                rows += len(chunk)
                chunk.clear()
        if chunk:
            copy.write("".join(chunk))
            rows += len(chunk)
    return rows


def schema_sections() -> tuple[str, str]:
    """The DDL file split into (tables, constraints): keys are built after the load."""
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    tables, marker, constraints = text.partition(CONSTRAINTS_MARKER)
    if not marker:
        raise RuntimeError(f"{SCHEMA_FILE} lacks the marker {CONSTRAINTS_MARKER!r}")
    return tables, constraints


def existing_source_tables(conn: psycopg.Connection) -> list[str]:
    """Which of the 15 source tables exist in schema public (in load order)."""
    rows = conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relname = any(%s)",
        (list(TABLES),),
    ).fetchall()
    found = {name for (name,) in rows}
    return [table for table in TABLES if table in found]


def first_table_with_rows(conn: psycopg.Connection, tables: Iterable[str]) -> str | None:
    """The first of `tables` holding at least one row, or None."""
    for table in tables:
        query = sql.SQL("select exists (select from {})").format(sql.Identifier("public", table))
        if conn.execute(query).fetchone()[0]:
            return table
    return None


def drop_source_tables(conn: psycopg.Connection, tables: Sequence[str]) -> None:
    """Drop the given source tables (and, with them, their owned sequences)."""
    for table in reversed(tables):
        conn.execute(sql.SQL("drop table if exists {} cascade").format(sql.Identifier("public", table)))
    for sequence, _, _ in SEQUENCES:
        conn.execute(sql.SQL("drop sequence if exists {}").format(sql.Identifier("public", sequence)))


def align_sequences(conn: psycopg.Connection) -> None:
    """Point each sequence past the loaded ids, so the shop could keep taking orders."""
    for sequence, table, column in SEQUENCES:
        conn.execute(
            sql.SQL("select setval({}, coalesce((select max({}) from {}), 0) + 1, false)").format(
                sql.Literal(f"public.{sequence}"), sql.Identifier(column), sql.Identifier("public", table)
            )
        )


def load_source_rows(
    conn: psycopg.Connection, size: SourceSize, seed: int, end_date: datetime.date, years: int
) -> dict[str, int]:
    """Generate and COPY every table, parents first; returns rows per table."""
    counts: dict[str, int] = {}
    with conn.cursor() as cur:

        def load(table: str, lines: Iterable[str]) -> None:
            counts[table] = copy_into(cur, table, lines)

        load("country", _text_lines(country_rows()))
        load("address_status", _text_lines(ADDRESS_STATUSES))
        load("book_language", _text_lines(book_language_rows()))
        load("order_status", _text_lines(ORDER_STATUSES))
        load("shipping_method", _text_lines(SHIPPING_METHODS))
        load("publisher", _text_lines(enumerate(publisher_names(seed, size.publishers), start=1)))
        load("author", _text_lines(enumerate(author_names(seed, size.authors), start=1)))
        books, catalogue = book_rows(seed, size, end_date)
        load("book", _text_lines(books))
        del books
        load("book_author", _text_lines(book_author_rows(seed, size, catalogue.book_ids)))
        load("address", _text_lines(address_rows(seed, size)))
        customers = customer_rows(seed, size)
        customer_ids = np.array([row[0] for row in customers], dtype=np.int64)
        load("customer", _text_lines(customers))
        del customers
        links, addresses = customer_address_rows(seed, size, customer_ids)
        load("customer_address", _text_lines(links))
        del links
        orders = generate_orders(seed, size, end_date, years, customer_ids, addresses)
        load("cust_order", cust_order_lines(orders))
        load("order_line", order_line_lines(seed, orders, catalogue))
        load("order_history", order_history_lines(seed, orders, end_date, years))
    return counts


def generate_source(
    dsn: str,
    *,
    scale: float = 1.0,
    seed: int = 42,
    end_date: datetime.date = datetime.date(2024, 3, 26),
    years: int = 3,
    replace: bool = False,
) -> dict[str, int]:
    """Creates the 15 tables in schema public of the database at dsn and fills them; returns rows per table.

    Refuses (raises SourceNotEmptyError naming the table) if any of the 15 tables already holds rows,
    unless replace=True (then drops them first). Everything happens in one transaction, so a failure
    leaves the database as it was.
    """
    if years < 1:
        raise ValueError(f"years must be at least 1, got {years}")
    size = source_size(scale)
    tables_ddl, constraints_ddl = schema_sections()
    with psycopg.connect(dsn) as conn, conn.transaction():
        existing = existing_source_tables(conn)
        if not replace and (occupied := first_table_with_rows(conn, existing)):
            raise SourceNotEmptyError(occupied)
        drop_source_tables(conn, existing)
        conn.execute(tables_ddl)
        counts = load_source_rows(conn, size, seed, end_date, years)
        conn.execute(constraints_ddl)
        align_sequences(conn)
        for table in TABLES:
            conn.execute(sql.SQL("analyze {}").format(sql.Identifier("public", table)))
    return counts


def source_is_empty(dsn: str) -> bool:
    """True when none of the 15 tables exist or all are empty (safe to generate without replace)."""
    with psycopg.connect(dsn) as conn:
        return first_table_with_rows(conn, existing_source_tables(conn)) is None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: generate the source, print rows per table and the elapsed seconds."""
    parser = argparse.ArgumentParser(description="Generate the PacBook OLTP source database.")
    parser.add_argument("--dsn", required=True, help="libpq connection string of the target database")
    parser.add_argument("--scale", type=float, default=1.0, help="1 = the real shop (default 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--end-date", type=datetime.date.fromisoformat, default=datetime.date(2024, 3, 26))
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--replace", action="store_true", help="drop existing source tables first")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        counts = generate_source(
            args.dsn, scale=args.scale, seed=args.seed, end_date=args.end_date, years=args.years, replace=args.replace
        )
    except SourceNotEmptyError as error:
        parser.exit(2, f"error: {error}\n")
    elapsed = time.perf_counter() - started
    width = max(map(len, counts))
    for table, rows in counts.items():
        print(f"{table:<{width}} {rows:>12,}")
    print(f"{'total':<{width}} {sum(counts.values()):>12,}")
    print(f"elapsed {elapsed:.1f} s (scale {args.scale:g}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
