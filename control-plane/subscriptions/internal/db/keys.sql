-- The key statements of the subscriptions' maintenance jobs.

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
