"""predict() for the reload test service."""


def predict(*args):
    return list(args)
