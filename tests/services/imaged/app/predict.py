"""predict() for the image test service: adds its inputs."""


def predict(*numbers):
    return sum(numbers)
