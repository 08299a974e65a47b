"""The backvault server: accounts, tokens and a blob API for encrypted repositories.

The server stores only what clients have already encrypted. Metadata (accounts, tokens,
repositories, object sizes and hashes) lives in SQLite or PostgreSQL through SQLAlchemy
Core. Object bytes live in a storage backend per repository (a local directory or S3).
"""
