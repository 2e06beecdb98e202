"""predict() that accepts any input, so generated requests never make it fail."""


def predict(*args):
    return {"count": len(args)}
