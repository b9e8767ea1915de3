-- name: TokenInsert :one
INSERT INTO ingest_tokens (name, prefix, token_hash, sources, api_ids, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, name, prefix, sources, api_ids, created_by, created_at, revoked_at, coalesce(revoked_by, '') AS revoked_by;

-- name: TokenList :many
SELECT id, name, prefix, sources, api_ids, created_by, created_at, revoked_at, coalesce(revoked_by, '') AS revoked_by
FROM ingest_tokens
ORDER BY created_at, id;

-- name: TokenGetByIDForUpdate :one
SELECT id, name, prefix, sources, api_ids, created_by, created_at, revoked_at, coalesce(revoked_by, '') AS revoked_by
FROM ingest_tokens
WHERE id = @id
FOR UPDATE;

-- name: TokenRevoke :one
UPDATE ingest_tokens SET revoked_at = now(), revoked_by = @revoked_by::text
WHERE id = @id
RETURNING id, name, prefix, sources, api_ids, created_by, created_at, revoked_at, coalesce(revoked_by, '') AS revoked_by;
