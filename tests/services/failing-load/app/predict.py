def load():
    raise RuntimeError("weights file is corrupt")


def predict(x):
    return x
