"""Security: who may call the service (bearer tokens, AWS SigV4)."""
