"""The key vault: OPAQUE records of password key slots, their guess counters and keys.

The server side is :mod:`backvault.vault.service` (over :mod:`backvault.vault.store` for
the SQL tables and :mod:`backvault.vault.keystore` for the OPRF seed and the record key,
in a key file or a PKCS#11 token). The client side of the HTTP API is
:mod:`backvault.vault.client`. Nothing is imported here, so the client does not load
SQLAlchemy or a PKCS#11 library.
"""
