-- name: SessionInsert :exec
INSERT INTO portal_sessions
    (id_hash, subject, org, role, name, email, email_verified, method, csrf, created_at, expires_at, last_seen_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10);

-- name: SessionGetByHash :one
SELECT id_hash, subject, org, role, name, email, email_verified, method, csrf, created_at, expires_at, last_seen_at
FROM portal_sessions
WHERE id_hash = $1;

-- SessionTouch records that the session was used at seen; the middleware
-- calls it at most once a minute per session.
-- name: SessionTouch :exec
UPDATE portal_sessions SET last_seen_at = @seen
WHERE id_hash = @id_hash AND last_seen_at < @seen;

-- name: SessionDelete :exec
DELETE FROM portal_sessions WHERE id_hash = $1;

-- SessionDeleteExpired removes the sessions past their absolute expiry or
-- unused since idle_before.
-- name: SessionDeleteExpired :execrows
DELETE FROM portal_sessions WHERE expires_at <= @now OR last_seen_at <= @idle_before;

-- name: LoginInsert :exec
INSERT INTO portal_logins (state_hash, binding_hash, method, verifier, nonce, return_to, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- LoginTake deletes the pending sign-in and returns it: a state is used
-- once, whether the rest of the callback succeeds or not.
-- name: LoginTake :one
DELETE FROM portal_logins WHERE state_hash = $1
RETURNING state_hash, binding_hash, method, verifier, nonce, return_to, created_at, expires_at;

-- name: LoginDeleteExpired :execrows
DELETE FROM portal_logins WHERE expires_at <= $1;
