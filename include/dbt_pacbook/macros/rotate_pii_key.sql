{#
    dbt run-operation rotate_pii_key
    Re-encrypts (and re-hashes) every personal column of the customer snapshot from the old key
    to the new one in ONE statement, so the history is never left half-rotated. The session must
    carry both keys: pacbook.pii_key (new) and pacbook.pii_key_previous (old) - see
    docs/security.md#rotating-the-key for the whole procedure (then `dbt build` rebuilds
    dim_customer from the re-encrypted snapshot). A wrong old key fails the statement
    ("Wrong key or corrupt data") and changes nothing.
#}
{% macro rotate_pii_key() %}
    {%- set previous = 'pacbook.pii_key_previous' -%}
    {%- set snapshot = ref('snap_pacbook__customers') -%}
    {%- do run_query(require_pii_key()) -%}
    {%- do run_query(require_pii_key(previous)) -%}
    {%- set rotate -%}
        update {{ snapshot }}
        set
            first_name_hash = {{ pii_hash(pii_decrypt('first_name_encrypted', previous)) }},
            last_name_hash = {{ pii_hash(pii_decrypt('last_name_encrypted', previous)) }},
            email_hash = {{ pii_hash(pii_decrypt('email_encrypted', previous)) }},
            first_name_encrypted = {{ pii_encrypt(pii_decrypt('first_name_encrypted', previous)) }},
            last_name_encrypted = {{ pii_encrypt(pii_decrypt('last_name_encrypted', previous)) }},
            email_encrypted = {{ pii_encrypt(pii_decrypt('email_encrypted', previous)) }},
            street_number_encrypted = {{ pii_encrypt(pii_decrypt('street_number_encrypted', previous)) }},
            street_name_encrypted = {{ pii_encrypt(pii_decrypt('street_name_encrypted', previous)) }}
    {%- endset -%}
    {%- set result = run_query(rotate ~ ' returning 1') -%}
    {%- do run_query('commit') -%}
    {%- set message = (result.rows | length) ~ ' snapshot rows re-encrypted with the new key' -%}
    {%- do log('rotate_pii_key: ' ~ message, info=true) -%}
{% endmacro %}
