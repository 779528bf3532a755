-- pgcrypto encrypts the personal columns of dwh (pgp_sym_encrypt, hmac): dbt's customer snapshot
-- calls it on every run. A trusted extension: whoever runs this needs CREATE on the database the
-- first time only; afterwards `if not exists` is a no-op for any role. The server must ship
-- PostgreSQL's contrib modules (docs/security.md#pgcrypto).
create extension if not exists pgcrypto;
