"""predict() for the image test service: adds its inputs; predict_batch adds each row's."""


def predict(*numbers):
    return sum(numbers)


def predict_batch(rows):
    return [sum(row) if isinstance(row, list) else row for row in rows]
