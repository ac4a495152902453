"""Authentication and authorization: API keys, JWTs, scopes, client address, CORS."""
