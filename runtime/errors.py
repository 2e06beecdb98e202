"""Exceptions of the runtime; every kiln error a user can cause derives from KilnError."""
from __future__ import annotations


class KilnError(Exception):
    """Raised when a user input (a file, an option, a setting) is wrong; the CLI prints it as one line."""


class ConfigError(KilnError):
    """Raised when service.yaml or a setting layered over it is invalid."""


class UserCodeError(KilnError):
    """Raised when the service's own code cannot be found or fails while it is imported or loaded."""
