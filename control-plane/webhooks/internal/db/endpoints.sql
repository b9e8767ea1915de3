-- name: EndpointInsert :one
INSERT INTO webhook_endpoints
    (organization_id, url, description, event_types, secret, enabled)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, organization_id, url, description, event_types, enabled, created_at, updated_at;

-- EndpointList pages through an organization's endpoints oldest first;
-- a nil after_created_at starts at the beginning.
-- name: EndpointList :many
SELECT id, organization_id, url, description, event_types, enabled, created_at, updated_at
FROM webhook_endpoints
WHERE organization_id = @organization_id
  AND (sqlc.narg(after_created_at)::timestamptz IS NULL
       OR (created_at, id) > (sqlc.narg(after_created_at)::timestamptz, @after_id::uuid))
ORDER BY created_at, id
LIMIT @max_rows;

-- name: EndpointGetByID :one
SELECT id, organization_id, url, description, event_types, enabled, created_at, updated_at
FROM webhook_endpoints
WHERE id = $1 AND organization_id = $2;

-- name: EndpointGetByIDForUpdate :one
SELECT id, organization_id, url, description, event_types, enabled, created_at, updated_at
FROM webhook_endpoints
WHERE id = $1 AND organization_id = $2
FOR UPDATE;

-- name: EndpointUpdate :one
UPDATE webhook_endpoints
SET url = $2, description = $3, event_types = $4, enabled = $5, updated_at = now()
WHERE id = $1
RETURNING id, organization_id, url, description, event_types, enabled, created_at, updated_at;

-- EndpointDelete returns the endpoint it deleted, for the audit log.
-- name: EndpointDelete :one
DELETE FROM webhook_endpoints WHERE id = $1 AND organization_id = $2
RETURNING id, organization_id, url, description, event_types, enabled, created_at, updated_at;

-- name: EndpointSetSecret :execrows
UPDATE webhook_endpoints SET secret = $3, updated_at = now()
WHERE id = $1 AND organization_id = $2;

-- EndpointDisable turns off an endpoint whose receiver answered 410 Gone.
-- name: EndpointDisable :exec
UPDATE webhook_endpoints SET enabled = false, updated_at = now() WHERE id = $1;

-- EndpointSubscribers lists the enabled endpoints of an organization that
-- take event_type, by name or by '*'.
-- name: EndpointSubscribers :many
SELECT id FROM webhook_endpoints
WHERE organization_id = $1 AND enabled AND event_types && ARRAY[@event_type::text, '*']::text[]
ORDER BY created_at, id;

-- EndpointSubscribersOf is EndpointSubscribers of several organizations.
-- name: EndpointSubscribersOf :many
SELECT organization_id, id FROM webhook_endpoints
WHERE organization_id = ANY(@organization_ids::uuid[]) AND enabled AND event_types && ARRAY[@event_type::text, '*']::text[]
ORDER BY organization_id, created_at, id;
