"""The Postgres store: schema migrations, route reads and manifest writes (asyncpg)."""
