"""predict(x, weight) and predict_batch(items); a negative x fails (its chunk, then its row)."""


def predict(x, weight):
    return {"score": x * weight}


def predict_batch(items):
    if any(item["x"] < 0 for item in items):
        raise ValueError("x must not be negative")
    return [{"score": item["x"] * item["weight"], "batched": len(items)} for item in items]
