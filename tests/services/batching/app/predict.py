"""Echo each input's marker with the size of the call it was part of.

An input is {"marker": ...}, optionally with "poison": true (its call raises), or
"wait_for": PATH (its call waits until the file exists, at most 30 s).
"""
import os
import time


def predict(item):
    return predict_batch([item])[0]


def predict_batch(items):
    for item in items:
        if item.get("poison"):
            raise ValueError(f"poisoned input {item.get('marker')}")
    for item in items:
        path = item.get("wait_for")
        deadline = time.monotonic() + 30
        while path and not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
    return [{"marker": item.get("marker"), "size": len(items), "pid": os.getpid()}
            for item in items]
