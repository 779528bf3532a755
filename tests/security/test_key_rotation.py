"""Rotating the PII key: every stored version is re-encrypted, nothing else changes, the old key is dead."""

from __future__ import annotations

import psycopg
import pytest

from include.pacbook.privileges import new_pii_key
from tests.security.conftest import build_as_transformer, rotate_key_as_transformer
from tests.security.test_personal_data import with_key
from tests.security.test_roles import run_as

THIRD_NIGHT = "2024-03-29 00:00:00"

VERSIONS = """
select
    customer_id,
    valid_from,
    dwh.decrypt_pii(first_name_encrypted),
    dwh.decrypt_pii(last_name_encrypted),
    dwh.decrypt_pii(email_encrypted)
from dwh.dim_customer
order by customer_id, valid_from
"""


def test_rotating_the_key_re_encrypts_every_version(secured):
    """Leaves the warehouse under the new key (secured.pii_key follows), which the other tests use."""
    pii_reader = secured.warehouse_as(secured.roles.pii_reader)
    original_key = secured.pii_key
    before = with_key(pii_reader, original_key, VERSIONS)
    ciphertexts_before = run_as(secured.admin_warehouse, "select email_encrypted from dwh.dim_customer")
    assert len(before) > len({row[0] for row in before}), "needs a customer with two versions"

    output = rotate_key_as_transformer(secured, new_pii_key())
    assert f"{len(before)} snapshot rows re-encrypted" in output
    # the snapshot runs again under the new key: its recomputed hashes match, so no customer "changed"
    build_as_transformer(secured, THIRD_NIGHT, "snap_pacbook__customers", "dim_customer")

    assert with_key(pii_reader, secured.pii_key, VERSIONS) == before
    assert run_as(secured.admin_warehouse, "select email_encrypted from dwh.dim_customer") != ciphertexts_before
    with pytest.raises(psycopg.Error, match="Wrong key"):
        with_key(pii_reader, original_key, VERSIONS)
