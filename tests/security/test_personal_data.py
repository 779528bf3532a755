"""Personal data: never in marts, only encrypted in dwh, readable by pii_reader with the key alone."""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest

from include.pacbook.privileges import PII_KEY_SETTING, pii_key_options
from tests.security.conftest import run_dbt
from tests.security.personal_data import IDENTIFYING, SINGLE_WORD, find_personal_data, personal_values
from tests.security.test_roles import denial, run_as


@pytest.fixture(scope="module")
def personal(secured):
    return personal_values(secured.admin_source)


def with_key(uri: str, key: str, statement: str, params: tuple = ()) -> list[tuple]:
    """A statement in a session that carries the PII key, the way pii_reader connects."""
    with psycopg.connect(uri, options=pii_key_options(key)) as conn:
        return conn.execute(statement, params).fetchall()


def test_the_scan_finds_personal_data_where_it_is(secured, personal):
    """The detector itself: staging holds the plaintext, and a leaked column is found by its values."""
    with psycopg.connect(secured.admin_warehouse) as conn:
        staging = {(f.relation, f.column, f.kind) for f in find_personal_data(conn, ("staging",), personal)}
    assert {
        ("staging.customer", "email", "email"),
        ("staging.customer", "first_name", "first_name"),
        ("staging.customer", "last_name", "last_name"),
        ("staging.address", "street_name", "street_name"),
    } <= staging
    with psycopg.connect(secured.admin_warehouse) as conn:
        conn.execute(
            """
            create table marts.leak_probe as
            select
                concat_ws(' ', first_name, last_name) as label,
                upper(email) as contact,
                concat_ws(' ', street_number, street_name) as place
            from staging.customer
            cross join lateral (select street_number, street_name from staging.address limit 1) as any_address
            order by customer_id
            limit 3
            """
        )
        try:
            leaks = {(f.relation, f.column, f.kind) for f in find_personal_data(conn, ("marts",), personal)}
        finally:
            conn.rollback()
    assert {
        ("marts.leak_probe", "label", "full_name"),
        ("marts.leak_probe", "contact", "email"),
        ("marts.leak_probe", "place", "street_address"),
    } <= leaks


def test_marts_hold_no_personal_data(secured, personal):
    kinds = {kind for kind, _ in personal}
    assert set(IDENTIFYING) | set(SINGLE_WORD) <= kinds
    with psycopg.connect(secured.admin_warehouse) as conn:
        assert find_personal_data(conn, ("marts",), personal) == []


def test_dwh_holds_no_plaintext_personal_data(secured, personal):
    """Tables and views of dwh alike: the snapshot and the dimension keep ciphertexts only."""
    with psycopg.connect(secured.admin_warehouse) as conn:
        assert find_personal_data(conn, ("dwh",), personal) == []
    customers = dict(run_as(secured.admin_source, "select customer_id, email from public.customer"))
    stored = run_as(
        secured.admin_warehouse,
        "select customer_id, email_encrypted, encode(email_encrypted, 'escape') from dwh.dim_customer where is_current",
    )
    assert len(stored) == len(customers)
    for customer_id, ciphertext, as_text in stored:
        email = customers[customer_id]
        assert ciphertext is not None and email.encode() not in bytes(ciphertext), customer_id
        assert email not in as_text


def test_pii_reader_decrypts_the_original_email(secured):
    pii_reader = secured.warehouse_as(secured.roles.pii_reader)
    source = run_as(secured.admin_source, "select customer_id, first_name, last_name, email from public.customer")
    decrypted = with_key(
        pii_reader,
        secured.pii_key,
        """
        select
            customer_id,
            dwh.decrypt_pii(first_name_encrypted),
            dwh.decrypt_pii(last_name_encrypted),
            dwh.decrypt_pii(email_encrypted)
        from dwh.dim_customer
        where is_current
        """,
    )
    assert sorted(decrypted) == sorted(source)


def test_pii_reader_needs_the_key(secured):
    pii_reader = secured.warehouse_as(secured.roles.pii_reader)
    with pytest.raises(psycopg.errors.RaiseException, match="no PII key in this session"):
        run_as(pii_reader, "select dwh.decrypt_pii(email_encrypted) from dwh.dim_customer limit 1")
    with pytest.raises(psycopg.Error, match="Wrong key"):
        with_key(pii_reader, "not-the-key-" + "x" * 20, "select dwh.decrypt_pii(email_encrypted) from dwh.dim_customer")


def test_bi_reader_cannot_decrypt_even_with_the_key(secured):
    """Neither the ciphertext nor the function is reachable for bi_reader, whatever it knows."""
    options = quote(pii_key_options(secured.pii_key), safe="")
    bi_reader = f"{secured.warehouse_as(secured.roles.bi_reader)}?options={options}"
    denial(bi_reader, "select dwh.decrypt_pii(email_encrypted) from dwh.dim_customer")
    ciphertext = run_as(secured.admin_warehouse, "select email_encrypted from dwh.dim_customer limit 1")[0][0]
    denial(bi_reader, f"select dwh.decrypt_pii('\\x{bytes(ciphertext).hex()}'::bytea)")
    assert run_as(bi_reader, f"select current_setting('{PII_KEY_SETTING}')") == [(secured.pii_key,)]


def test_a_changed_email_makes_a_new_customer_version(secured):
    """Change detection works on keyed hashes: the changed customer, and only they, got a version."""
    pii_reader = secured.warehouse_as(secured.roles.pii_reader)
    versions = with_key(
        pii_reader,
        secured.pii_key,
        """
        select customer_id, dwh.decrypt_pii(email_encrypted), valid_from::text, valid_to::text, is_current
        from dwh.dim_customer
        where customer_id in (select customer_id from dwh.dim_customer where not is_current)
        order by customer_id, valid_from
        """,
    )
    assert versions == [
        (secured.changed_customer_id, secured.old_email, "1900-01-01 00:00:00", "2024-03-28 00:00:00", False),
        (secured.changed_customer_id, secured.new_email, "2024-03-28 00:00:00", "9999-12-31 00:00:00", True),
    ]


def test_dbt_refuses_to_snapshot_without_the_key(secured):
    uri = secured.warehouse_as(secured.roles.transformer)
    result = run_dbt(uri, secured.dbt_target, "snapshot", "--select", "snap_pacbook__customers")
    assert result.returncode != 0
    assert "no PII key in this dbt session" in result.stdout


def test_the_key_is_in_no_dbt_artefact(secured):
    """Every dbt call of this package (builds, snapshots, the rotation) wrote its compiled SQL,
    run_results.json, manifest and logs into one folder: no key in any of them."""
    keys = [secured.pii_key, *secured.retired_keys]
    files = [path for path in secured.dbt_target.rglob("*") if path.is_file()]
    assert any(path.name == "run_results.json" for path in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        content = path.read_bytes()
        assert not any(key.encode() in content for key in keys), f"a PII key in {path}"
    # ... while the compiled SQL that encrypted with it is there, naming only the session setting
    encrypt = "pgp_sym_encrypt(cast(customers.email as text), current_setting('pacbook.pii_key')"
    assert encrypt in (secured.dbt_target / "run_results.json").read_text() or any(
        encrypt in path.read_text() for path in files if path.suffix == ".sql"
    )
