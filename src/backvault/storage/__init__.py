"""Storage of repository objects: the backend interface and its implementations."""

from backvault.storage.base import KINDS, Backend, ObjectNotFoundError, StorageError
from backvault.storage.local import LocalBackend

__all__ = [
    "KINDS",
    "Backend",
    "LocalBackend",
    "ObjectNotFoundError",
    "StorageError",
    "open_backend",
]


def open_backend(location: str) -> Backend:
    """Return the backend for a repository location given by the user.

    ``s3://BUCKET/PREFIX`` opens an S3 bucket, ``http(s)://HOST:PORT/NAME`` a repository
    on a backvault server, and a location without a scheme opens a local directory. A
    location with any other scheme raises :class:`UsageError`.
    """
    scheme, separator, _ = location.partition("://")
    if not separator or not (scheme.isascii() and scheme.isalnum()):
        return LocalBackend(location)
    scheme = scheme.lower()

    if scheme == "s3":
        # Imported here so that commands on a local repository do not load boto3.
        from backvault.storage.s3 import S3Backend

        return S3Backend.from_location(location)

    if scheme in ("http", "https"):
        # Imported here so that commands on a local repository do not load httpx.
        from backvault.storage.http import HttpBackend

        return HttpBackend(location)

    from backvault.errors import UsageError

    raise UsageError(
        f"unsupported repository location {location!r}",
        hint="Use a directory path, s3://BUCKET/PREFIX or http(s)://HOST:PORT/NAME.",
    )
