"""scaffold: see README.md."""
