"""builder: see README.md."""
