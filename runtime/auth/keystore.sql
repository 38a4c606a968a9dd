-- The SQL of `swarm-runtime apikey` (runtime/auth/keystore.py) against table api_keys.

-- name: table_exists
SELECT to_regclass('api_keys') IS NOT NULL AS present;

-- name: role_names
SELECT name FROM roles ORDER BY level DESC, name;

-- name: insert_key
INSERT INTO api_keys (tenant_id, role, name, key_id, salt, key_hash)
VALUES (%s, %s, %s, %s, %s, %s)
RETURNING _creation_time;

-- name: list_keys
SELECT key_id, tenant_id, role, name, _creation_time AS created_at, last_used_at, revoked_at
FROM api_keys
WHERE (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
  AND (%(all)s OR revoked_at IS NULL)
ORDER BY _creation_time, key_id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = now()
WHERE key_id = %s AND revoked_at IS NULL
RETURNING revoked_at;

-- name: key_exists
SELECT revoked_at FROM api_keys WHERE key_id = %s;
