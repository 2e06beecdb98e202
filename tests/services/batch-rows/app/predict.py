"""predict(a, b) for the batch tests: a non-number fails its row only; load() runs per worker."""
import os

LOADED = []


def load():
    LOADED.append(os.getpid())


def predict(a, b):
    if not LOADED:
        raise RuntimeError("predict before load()")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        raise TypeError(f"not a number: {a!r} + {b!r}")
    return a + b
