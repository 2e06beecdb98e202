"""predict() that logs, so tests see the request id on the user's own log lines."""
import logging

log = logging.getLogger("observed.predict")


def predict(x):
    log.info("predicting %s", x)
    if x == "boom":
        raise ValueError("boom requested")
    return {"double": x * 2}
