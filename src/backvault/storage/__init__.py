"""Where repository objects live: the backend interface and its implementations."""

from backvault.storage.base import KINDS, Backend, ObjectNotFoundError, StorageError
from backvault.storage.local import LocalBackend

__all__ = ["KINDS", "Backend", "LocalBackend", "ObjectNotFoundError", "StorageError", "open_backend"]


def open_backend(location: str) -> Backend:
    """Return the backend for a repository location given by the user."""
    return LocalBackend(location)
