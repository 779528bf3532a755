{#
    Personal data (names, emails, street addresses) is stored in dwh only encrypted, with pgcrypto
    (docs/security.md). The key is never part of the SQL: it travels in the dbt session's setting
    `pacbook.pii_key` (libpq options / PGOPTIONS, from the Airflow connection pacbook_pii_key), so it
    appears in no compiled file, log or run_results.json.

    pii_encrypt(column)  pgp_sym_encrypt (AES-256, salted): a fresh ciphertext on every call.
                         s2k-mode=1 (salted, not iterated): iterating the key derivation slows down
                         guessing a human password; the key here is 256 random bits, so iterations
                         would only cost time (23x: 0.28 ms per value, 30 s a night at scale 10).
    pii_hash(column)     keyed HMAC-SHA256 of the plaintext: equal plaintexts give equal hashes, so
                         the snapshot's check strategy detects a change (e.g. a new email) without
                         comparing ciphertexts, and nobody without the key can test a guess.
    pii_decrypt(column)  the plaintext again (key rotation only; people use dwh.decrypt_pii).
    Each takes the session setting holding the key; rotation passes `pacbook.pii_key_previous`.
#}
{% macro pii_key(setting='pacbook.pii_key') -%}
    current_setting('{{ setting }}')
{%- endmacro %}

{% macro pii_encrypt(column, setting='pacbook.pii_key') -%}
    pgp_sym_encrypt(cast({{ column }} as text), {{ pii_key(setting) }}, 'cipher-algo=aes256, s2k-mode=1')
{%- endmacro %}

{% macro pii_hash(column, setting='pacbook.pii_key') -%}
    hmac(cast({{ column }} as text), 'pacbook-pii-hash:' || {{ pii_key(setting) }}, 'sha256')
{%- endmacro %}

{% macro pii_decrypt(column, setting='pacbook.pii_key') -%}
    pgp_sym_decrypt({{ column }}, {{ pii_key(setting) }})
{%- endmacro %}

{# A hook that stops a node at once, with the fix, when the session carries no key. #}
{% macro require_pii_key(setting='pacbook.pii_key') -%}
    do $$
    begin
        if coalesce(current_setting('{{ setting }}', true), '') = '' then
            raise exception 'no PII key in this dbt session: set PGOPTIONS="-c {{ setting }}=<key>" '
                '(the Airflow connection pacbook_pii_key; docs/security.md#the-key)';
        end if;
    end
    $$
{%- endmacro %}
