"""Docs: the OpenAPI document, Swagger UI and request validation against the documented schemas."""
