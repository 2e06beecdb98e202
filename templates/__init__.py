"""Cookiecutter templates rendered by `kiln new-service` (data, not code)."""
