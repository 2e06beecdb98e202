"""Observability: JSON logs, Prometheus metrics, request capture and its export."""
