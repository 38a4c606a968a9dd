-- SQL the runtime runs on its own behalf. Parameters are always bound.

-- name: begin_read_write
BEGIN ISOLATION LEVEL SERIALIZABLE

-- name: begin_read_only
BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: advisory_lock
-- Session-level: taken in autocommit before BEGIN, so the transaction's snapshot is taken
-- only once the lock is held (see DESIGN §7). {lock}, here and below, is the 64-bit lock id
-- (a Python int, formatted in): these run as bare simple queries on the hot path.
SELECT pg_advisory_lock({lock})

-- name: advisory_unlock
SELECT pg_advisory_unlock({lock})

-- name: then_unlock
-- Appended to COMMIT (one simple query): the unlock runs in its own
-- implicit transaction right after the COMMIT, in the same round trip. If COMMIT fails, the
-- rest of the string does not run and the lock is kept for the retry (or released on the
-- way out). The lock itself cannot ride with BEGIN: statements before a BEGIN in one simple
-- query join its transaction, and the lock's wait would then come after the snapshot.
; SELECT pg_advisory_unlock({lock})

-- name: set_local_statement_timeout
SELECT set_config('statement_timeout', %s, true)

-- name: ready
SELECT 1

-- name: migration_lock
-- Serialises schema changes between workers and replicas starting at once.
SELECT pg_advisory_xact_lock(7301160427353165291)

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS _runtime_migrations (
    version bigserial PRIMARY KEY,
    schema_hash text NOT NULL,
    statements jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: last_migration
SELECT version, schema_hash FROM _runtime_migrations ORDER BY version DESC LIMIT 1

-- name: record_migration
INSERT INTO _runtime_migrations (schema_hash, statements) VALUES (%s, %s) RETURNING version
