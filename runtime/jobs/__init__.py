"""Jobs over files: `kiln batch` (batch.py drives, worker.py predicts, files.py reads and writes)."""
