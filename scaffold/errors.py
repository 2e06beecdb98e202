"""Exceptions of `scaffold new-service`; the CLI prints each as one line and exits 1."""
from __future__ import annotations

from runtime.errors import KilnError


class ScaffoldError(KilnError):
    """Raised when a service folder cannot be written: a bad NAME, an existing folder, a bad variable."""
