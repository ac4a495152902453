"""The handler pool: JS handlers of `function` routes in V8 isolates, with module-scoped data."""
