"""Dockerfile templates rendered by `kiln build` (data, not code)."""
