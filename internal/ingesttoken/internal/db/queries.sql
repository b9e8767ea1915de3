-- IngestTokenScopeByHash reads the scope of the live token with a hash.
-- name: IngestTokenScopeByHash :one
SELECT sources, api_ids FROM ingest_tokens
WHERE token_hash = $1 AND revoked_at IS NULL;

-- SubscriptionAPIIDs reads the API id of each subscription of ids, given as
-- text: Postgres casts them, as ingest reads them from events.
-- name: SubscriptionAPIIDs :many
SELECT id::text AS id, api_id::text AS api_id FROM subscriptions
WHERE id = ANY((sqlc.arg(ids)::text[])::uuid[]);
