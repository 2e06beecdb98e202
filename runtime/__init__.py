"""kiln's runtime: what runs inside every service, from the app factory to the SDK helper."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["log_metric"]


def log_metric(name: str, value: float, **labels: object) -> None:
    """Set the gauge `kiln_user_<name>{labels}` to VALUE; /metrics shows it for all workers."""
    from runtime.observability.metrics import log_metric as set_gauge

    set_gauge(name, value, **labels)
