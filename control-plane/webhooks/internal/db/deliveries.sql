-- name: DeliveryInsert :one
INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, payload)
VALUES ($1, $2, $3, $4)
RETURNING id;

-- DeliveryList pages through an endpoint's deliveries newest first; a nil
-- before_created_at starts at the newest.
-- name: DeliveryList :many
SELECT d.id, d.endpoint_id, d.message_id, d.event_type, d.payload, d.status, d.attempts,
       d.last_status_code, d.last_error, d.created_at, d.delivered_at
FROM webhook_deliveries d
WHERE d.endpoint_id = @endpoint_id
  AND (sqlc.narg(before_created_at)::timestamptz IS NULL
       OR (d.created_at, d.id) < (sqlc.narg(before_created_at)::timestamptz, @before_id::uuid))
ORDER BY d.created_at DESC, d.id DESC
LIMIT @max_rows;

-- name: DeliveryGetByID :one
SELECT d.id, d.endpoint_id, d.message_id, d.event_type, d.payload, d.status, d.attempts,
       d.last_status_code, d.last_error, d.created_at, d.delivered_at
FROM webhook_deliveries d
JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.id = $1 AND e.organization_id = $2;

-- DeliveryRequeue returns a delivery of the organization to pending.
-- name: DeliveryRequeue :one
UPDATE webhook_deliveries d SET status = 'pending', delivered_at = NULL
FROM webhook_endpoints e
WHERE d.id = $1 AND e.id = d.endpoint_id AND e.organization_id = $2
RETURNING d.id, d.endpoint_id, d.message_id, d.event_type, d.payload, d.status, d.attempts,
          d.last_status_code, d.last_error, d.created_at, d.delivered_at;

-- DeliveryTarget loads a delivery with the endpoint it goes to.
-- name: DeliveryTarget :one
SELECT d.message_id, d.payload, d.status, e.id AS endpoint_id, e.url, e.secret, e.enabled
FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.id = $1;

-- DeliveryRecordAttempt counts an attempt and sets the delivery's state;
-- delivered_at is set by a success.
-- name: DeliveryRecordAttempt :execrows
UPDATE webhook_deliveries
SET attempts = attempts + 1, last_status_code = $2, last_error = $3, status = $4,
    delivered_at = CASE WHEN $4 = 'succeeded' THEN now() ELSE delivered_at END
WHERE id = $1;

-- name: DeliveryFail :exec
UPDATE webhook_deliveries SET status = 'failed', last_error = $2
WHERE id = $1 AND status = 'pending';

-- name: AttemptInsert :exec
INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms)
VALUES ($1, $2, $3, $4);

-- name: AttemptList :many
SELECT id, status_code, error, duration_ms, created_at
FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id;
