-- The statements of API keys: their reads, their lifecycle, their gateway
-- syncs, the maintenance jobs and the notices.

-- name: KeyListExpiredIDs :many
SELECT id FROM api_keys WHERE expires_at <= $1 AND state IN ('active', 'suspended') ORDER BY id;

-- name: KeyListGraceEndedIDs :many
SELECT id FROM api_keys WHERE grace_until IS NOT NULL AND grace_until <= $1
    AND state IN ('active', 'suspended') ORDER BY id;

-- KeyNoticeRecipient reads the email of the subscriber of a key's
-- subscription; NULL when the subscriber has no user row.
-- name: KeyNoticeRecipient :one
SELECT u.email FROM api_keys k
    JOIN subscriptions s ON s.id = k.subscription_id
    LEFT JOIN users u ON u.subject = s.subscriber
    WHERE k.id = $1;

-- name: KeyExistsByHash :one
SELECT EXISTS (SELECT 1 FROM api_keys WHERE hash = $1);

-- KeyBumpSyncVersion makes the gateway's record of a key stale, so that
-- the next sync writes it again.
-- name: KeyBumpSyncVersion :exec
UPDATE api_keys SET sync_version = sync_version + 1 WHERE id = $1;

-- Every read of a key selects the same columns: the key, its
-- subscription's organization and status, its API's organization, and
-- whether the gateway holds its latest change (synced).

-- name: KeyGetByID :one
SELECT k.id, k.subscription_id, s.api_id, k.name, k.env, k.prefix, k.last4, k.state, k.expires_at, k.grace_until,
    k.methods, k.routes, k.rate_per_second, k.rate_per_minute, k.metadata, k.rotated_from, k.auto_rotate, k.rotate_every_days,
    k.last_rotated_at, k.auto_renew, k.renew_days, (k.synced_version >= k.sync_version)::boolean AS synced, k.sync_attempts, k.sync_error,
    k.created_by, k.created_at, k.updated_at, k.revoked_at, s.organization_id, a.organization_id AS api_organization_id, k.hash, k.sync_version,
    s.status AS subscription_status, k.sealed_key, k.suspended_by_admin
FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id JOIN apis a ON a.id = s.api_id
WHERE k.id = $1;

-- name: KeyGetByIDForUpdate :one
SELECT k.id, k.subscription_id, s.api_id, k.name, k.env, k.prefix, k.last4, k.state, k.expires_at, k.grace_until,
    k.methods, k.routes, k.rate_per_second, k.rate_per_minute, k.metadata, k.rotated_from, k.auto_rotate, k.rotate_every_days,
    k.last_rotated_at, k.auto_renew, k.renew_days, (k.synced_version >= k.sync_version)::boolean AS synced, k.sync_attempts, k.sync_error,
    k.created_by, k.created_at, k.updated_at, k.revoked_at, s.organization_id, a.organization_id AS api_organization_id, k.hash, k.sync_version,
    s.status AS subscription_status, k.sealed_key, k.suspended_by_admin
FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id JOIN apis a ON a.id = s.api_id
WHERE k.id = $1 FOR UPDATE OF k;

-- name: KeyListBySubscription :many
SELECT k.id, k.subscription_id, s.api_id, k.name, k.env, k.prefix, k.last4, k.state, k.expires_at, k.grace_until,
    k.methods, k.routes, k.rate_per_second, k.rate_per_minute, k.metadata, k.rotated_from, k.auto_rotate, k.rotate_every_days,
    k.last_rotated_at, k.auto_renew, k.renew_days, (k.synced_version >= k.sync_version)::boolean AS synced, k.sync_attempts, k.sync_error,
    k.created_by, k.created_at, k.updated_at, k.revoked_at, s.organization_id, a.organization_id AS api_organization_id, k.hash, k.sync_version,
    s.status AS subscription_status, k.sealed_key, k.suspended_by_admin
FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id JOIN apis a ON a.id = s.api_id
WHERE k.subscription_id = $1 ORDER BY k.created_at, k.id;

-- name: KeyListAll :many
SELECT k.id, k.subscription_id, s.api_id, k.name, k.env, k.prefix, k.last4, k.state, k.expires_at, k.grace_until,
    k.methods, k.routes, k.rate_per_second, k.rate_per_minute, k.metadata, k.rotated_from, k.auto_rotate, k.rotate_every_days,
    k.last_rotated_at, k.auto_renew, k.renew_days, (k.synced_version >= k.sync_version)::boolean AS synced, k.sync_attempts, k.sync_error,
    k.created_by, k.created_at, k.updated_at, k.revoked_at, s.organization_id, a.organization_id AS api_organization_id, k.hash, k.sync_version,
    s.status AS subscription_status, k.sealed_key, k.suspended_by_admin
FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id JOIN apis a ON a.id = s.api_id;

-- KeyListExpiring lists the live keys that expire in (after, until] and
-- do not renew: they get an expiry notice.
-- name: KeyListExpiring :many
SELECT k.id, k.subscription_id, s.api_id, k.name, k.env, k.prefix, k.last4, k.state, k.expires_at, k.grace_until,
    k.methods, k.routes, k.rate_per_second, k.rate_per_minute, k.metadata, k.rotated_from, k.auto_rotate, k.rotate_every_days,
    k.last_rotated_at, k.auto_renew, k.renew_days, (k.synced_version >= k.sync_version)::boolean AS synced, k.sync_attempts, k.sync_error,
    k.created_by, k.created_at, k.updated_at, k.revoked_at, s.organization_id, a.organization_id AS api_organization_id, k.hash, k.sync_version,
    s.status AS subscription_status, k.sealed_key, k.suspended_by_admin
FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id JOIN apis a ON a.id = s.api_id
WHERE k.state IN ('active', 'suspended') AND NOT k.auto_renew
    AND k.grace_until IS NULL AND k.expires_at > @after AND k.expires_at <= @until ORDER BY k.id;

-- KeyListRotationDue lists the keys whose automatic rotation falls due by
-- due_by.
-- name: KeyListRotationDue :many
SELECT k.id, k.subscription_id, s.api_id, k.name, k.env, k.prefix, k.last4, k.state, k.expires_at, k.grace_until,
    k.methods, k.routes, k.rate_per_second, k.rate_per_minute, k.metadata, k.rotated_from, k.auto_rotate, k.rotate_every_days,
    k.last_rotated_at, k.auto_renew, k.renew_days, (k.synced_version >= k.sync_version)::boolean AS synced, k.sync_attempts, k.sync_error,
    k.created_by, k.created_at, k.updated_at, k.revoked_at, s.organization_id, a.organization_id AS api_organization_id, k.hash, k.sync_version,
    s.status AS subscription_status, k.sealed_key, k.suspended_by_admin
FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id JOIN apis a ON a.id = s.api_id
WHERE k.auto_rotate AND k.state = 'active' AND k.grace_until IS NULL
    AND coalesce(k.last_rotated_at, k.created_at) + make_interval(days => k.rotate_every_days) <= @due_by ORDER BY k.id;

-- KeyFindAdminSuspended finds a key of the subscription that an admin
-- suspended.
-- name: KeyFindAdminSuspended :one
SELECT id FROM api_keys WHERE subscription_id = $1 AND state = 'suspended' AND suspended_by_admin
    ORDER BY id LIMIT 1;

-- KeyCountLive counts the keys that hold one of a subscription's
-- max_active_keys slots.
-- name: KeyCountLive :one
SELECT count(*) FROM api_keys WHERE subscription_id = $1
    AND state IN ('pending', 'active', 'suspended', 'failed_sync') AND grace_until IS NULL;

-- name: KeyInsert :exec
INSERT INTO api_keys (id, subscription_id, name, env, hash, prefix, last4, expires_at, methods, routes,
        rate_per_second, rate_per_minute, metadata, rotated_from, auto_rotate, rotate_every_days, last_rotated_at,
        auto_renew, renew_days, created_by, sealed_key)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21);

-- name: KeyUpdateSettings :exec
UPDATE api_keys SET name = $2, expires_at = $3, methods = $4, routes = $5, rate_per_second = $6,
        rate_per_minute = $7, metadata = $8, auto_rotate = $9, rotate_every_days = $10, auto_renew = $11, renew_days = $12,
        sync_version = sync_version + 1, updated_at = now()
    WHERE id = $1;

-- KeyUpdateState moves a key to state to_state: a revocation records when,
-- a revoked or expired key loses its sealed successor plaintext, and a
-- suspension records whether an admin made it.
-- name: KeyUpdateState :exec
UPDATE api_keys SET state = @to_state::key_state, revoked_at = CASE WHEN @to_state::key_state = 'revoked' THEN @now::timestamptz END,
        sealed_key = CASE WHEN @to_state::key_state IN ('revoked', 'expired') THEN NULL ELSE sealed_key END,
        suspended_by_admin = @to_state::key_state = 'suspended' AND @by_admin::boolean,
        sync_version = sync_version + 1, updated_at = now() WHERE id = @id;

-- name: KeyMarkAdminSuspended :exec
UPDATE api_keys SET suspended_by_admin = true, updated_at = now() WHERE id = $1;

-- KeyListLiveIDsForUpdate lists and locks a subscription's keys that are
-- neither revoked nor expired.
-- name: KeyListLiveIDsForUpdate :many
SELECT id FROM api_keys WHERE subscription_id = $1 AND state NOT IN ('revoked', 'expired')
    ORDER BY id FOR UPDATE;

-- name: KeyDelete :exec
DELETE FROM api_keys WHERE id = $1;

-- name: KeySetGrace :exec
UPDATE api_keys SET grace_until = $2, auto_rotate = false, sync_version = sync_version + 1,
        updated_at = now() WHERE id = $1;

-- name: KeyEraseSealed :exec
UPDATE api_keys SET sealed_key = NULL, updated_at = now() WHERE id = $1;

-- name: KeyRenew :exec
UPDATE api_keys SET expires_at = $2, sync_version = sync_version + 1, updated_at = now()
    WHERE id = $1;

-- KeyMarkSynced records that the gateway holds version synced_version of
-- a key, and moves the key to state.
-- name: KeyMarkSynced :exec
UPDATE api_keys SET synced_version = GREATEST(synced_version, $2), sync_attempts = 0,
        sync_error = '', state = $3 WHERE id = $1;

-- name: KeySyncFailed :exec
UPDATE api_keys SET sync_attempts = $2, sync_error = $3, state = $4 WHERE id = $1;

-- KeyNoticeClaim inserts the row of a key notice on one channel; no row
-- is inserted when the notice was claimed before.
-- name: KeyNoticeClaim :execrows
INSERT INTO key_notices (key_id, kind, channel, event_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT DO NOTHING;
