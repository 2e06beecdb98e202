"""kiln's runtime: what runs inside every service, from the app factory to the SDK helper."""
from __future__ import annotations

__version__ = "0.1.0"
