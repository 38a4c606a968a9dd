"""Database access: the connection pool, runtime SQL, documents API (`ctx.db`) and migrations."""
