"""The benchmark's contestant apps (bare Flask, plain WSGI, rest-model-service's model class)."""
