"""Serving: the request lifecycle, predict and health routes, responses, user code and model loading."""

#: The prefix of the routes every service has (predict, health, feedback).
API = "/api/v1.0"
