"""load() waits until the file named by TEST_LOAD_GATE exists, so a test sees the loading state."""
import os
import time

STATE = {}


def load():
    gate = os.environ["TEST_LOAD_GATE"]
    while not os.path.exists(gate):
        time.sleep(0.05)
    STATE["loaded"] = True


def predict(x):
    return {"loaded": STATE.get("loaded", False), "x": x}
