"""backvault: end-to-end encrypted, deduplicated backups.

The public API lives in :mod:`backvault.api`; errors in :mod:`backvault.errors`.
"""

__version__ = "0.1.0"
