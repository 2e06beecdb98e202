"""What POST /api/v1.0/predict runs: load() once per worker, preprocess() and predict() per request.

The body {"input": X} calls predict(*X) when X is a list and predict(X) otherwise, after
preprocess() with the same arguments when it is defined. The answer is
{"prediction": <what predict returned>, "request_id": "..."}.
"""


def load():
    """Prepare what predict() needs, e.g. read model weights; optional.

    It runs once in each worker process after it starts and before it serves; keep what it
    loads in a module-level variable. Until it returns, the status route answers 503; if it
    raises, the status route says why and predict answers 503.
    """


def preprocess(*args):
    """Turn the request's input into predict()'s arguments; optional, delete it if unused.

    Return a tuple to pass several arguments to predict(), anything else to pass one.
    """
    return args


def predict(*args):
    """Answer one request: {"input": [2, 5]} calls predict(2, 5), which answers 7.

    Return anything JSON can hold (numpy arrays and numbers too); return a generator to
    stream one JSON line per item (NDJSON). An exception answers 500 and is logged.
    """
    return sum(args)
