"""predict(**PredictInput) for the typed test service; CALLS records what predict received."""
CALLS = []


def preprocess(features, count, label):
    return {"features": features, "count": count, "label": label.strip()}


def predict(features, count, label):
    CALLS.append({"features": features, "count": count, "label": label})
    return {"total": sum(features) * count, "label": label.upper()}
