"""Development only: hot reload and the checker of edited code."""
