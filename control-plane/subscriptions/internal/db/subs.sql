-- Every read of a subscription selects the same columns: the
-- subscription, its plan version's terms, its API's organization, whether
-- the gateway holds its latest change (synced), the sum of the current
-- period's quota adjustments, and what its hold on a new subscription
-- depends on (canceled_from, hold_released), and the billing anchor its
-- periods are stepped from.

-- name: SubscriptionGetByID :one
SELECT s.id, s.organization_id, s.subscriber, s.api_id, v.plan_id, s.plan_version_id, v.version, s.status,
    s.trial_ends_at, s.current_period_start, s.current_period_end, s.cancel_at_period_end, s.canceled_at, s.max_active_keys,
    s.synced_version >= s.sync_version AS synced, s.created_at, s.updated_at, a.organization_id AS api_organization_id, s.sync_version,
    v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard, v.rate_per_second,
    v.rate_per_minute, v.included_units,
    COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
        WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint AS quota_adjustments,
    s.canceled_from, (s.hold_released_at IS NOT NULL)::boolean AS hold_released, s.billing_anchor
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id JOIN apis a ON a.id = s.api_id
WHERE s.id = $1;

-- name: SubscriptionGetByIDForUpdate :one
SELECT s.id, s.organization_id, s.subscriber, s.api_id, v.plan_id, s.plan_version_id, v.version, s.status,
    s.trial_ends_at, s.current_period_start, s.current_period_end, s.cancel_at_period_end, s.canceled_at, s.max_active_keys,
    s.synced_version >= s.sync_version AS synced, s.created_at, s.updated_at, a.organization_id AS api_organization_id, s.sync_version,
    v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard, v.rate_per_second,
    v.rate_per_minute, v.included_units,
    COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
        WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint AS quota_adjustments,
    s.canceled_from, (s.hold_released_at IS NOT NULL)::boolean AS hold_released, s.billing_anchor
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id JOIN apis a ON a.id = s.api_id
WHERE s.id = $1 FOR UPDATE OF s;

-- SubscriptionListPast reads an organization's subscriptions to an API,
-- newest first, and locks them.
-- name: SubscriptionListPast :many
SELECT s.id, s.organization_id, s.subscriber, s.api_id, v.plan_id, s.plan_version_id, v.version, s.status,
    s.trial_ends_at, s.current_period_start, s.current_period_end, s.cancel_at_period_end, s.canceled_at, s.max_active_keys,
    s.synced_version >= s.sync_version AS synced, s.created_at, s.updated_at, a.organization_id AS api_organization_id, s.sync_version,
    v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard, v.rate_per_second,
    v.rate_per_minute, v.included_units,
    COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
        WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint AS quota_adjustments,
    s.canceled_from, (s.hold_released_at IS NOT NULL)::boolean AS hold_released, s.billing_anchor
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id JOIN apis a ON a.id = s.api_id
WHERE s.organization_id = $1 AND s.api_id = $2 ORDER BY s.created_at DESC, s.id DESC FOR UPDATE OF s;

-- SubscriptionList lists by cursor the subscriptions of organization
-- org_id and those to its APIs (every: all of them); api_id and status
-- are optional.
-- name: SubscriptionList :many
SELECT s.id, s.organization_id, s.subscriber, s.api_id, v.plan_id, s.plan_version_id, v.version, s.status,
    s.trial_ends_at, s.current_period_start, s.current_period_end, s.cancel_at_period_end, s.canceled_at, s.max_active_keys,
    s.synced_version >= s.sync_version AS synced, s.created_at, s.updated_at, a.organization_id AS api_organization_id, s.sync_version,
    v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard, v.rate_per_second,
    v.rate_per_minute, v.included_units,
    COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
        WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint AS quota_adjustments,
    s.canceled_from, (s.hold_released_at IS NOT NULL)::boolean AS hold_released, s.billing_anchor
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id JOIN apis a ON a.id = s.api_id
WHERE (@every::boolean OR s.organization_id = @org_id OR a.organization_id = @org_id)
  AND (sqlc.narg(api_id)::uuid IS NULL OR s.api_id = sqlc.narg(api_id)) AND (@status::text = '' OR s.status = @status::subscription_status)
  AND (sqlc.narg(after_at)::timestamptz IS NULL OR (s.created_at, s.id) > (sqlc.narg(after_at), @after_id::uuid))
ORDER BY s.created_at, s.id LIMIT @row_limit;

-- name: SubscriptionListAll :many
SELECT s.id, s.organization_id, s.subscriber, s.api_id, v.plan_id, s.plan_version_id, v.version, s.status,
    s.trial_ends_at, s.current_period_start, s.current_period_end, s.cancel_at_period_end, s.canceled_at, s.max_active_keys,
    s.synced_version >= s.sync_version AS synced, s.created_at, s.updated_at, a.organization_id AS api_organization_id, s.sync_version,
    v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard, v.rate_per_second,
    v.rate_per_minute, v.included_units,
    COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
        WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint AS quota_adjustments,
    s.canceled_from, (s.hold_released_at IS NOT NULL)::boolean AS hold_released, s.billing_anchor
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id JOIN apis a ON a.id = s.api_id;

-- name: APIStateGetForShare :one
SELECT state FROM apis WHERE id = $1 FOR SHARE;

-- name: SubscriptionInsert :one
INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status,
        trial_ends_at, current_period_start, current_period_end, max_active_keys, carried_from, billing_anchor)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id;

-- name: QuotaAdjustmentInsertCarried :exec
INSERT INTO quota_adjustments (subscription_id, period_start, kind, requests, used_at_change, reason, actor)
    VALUES ($1, $2, 'carried', $3, $4, $5, $6);

-- name: SubscriptionReleaseHold :exec
UPDATE subscriptions SET hold_released_at = $2, hold_released_by = $3, updated_at = now()
    WHERE id = $1;

-- name: SubscriptionHistoryInsert :exec
INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor, reason)
    VALUES ($1, $2, $3, $4, $5, $6);

-- name: SubscriptionPlanChangesSince :one
-- How many plan changes a subscription made from a time on (its billing
-- period's start): ChangePlan caps them per period.
SELECT count(*) FROM subscription_history
    WHERE subscription_id = $1 AND reason = 'plan changed' AND effective_at >= sqlc.arg(since)::timestamptz;

-- name: SubscriptionCancelAtPeriodEnd :exec
UPDATE subscriptions SET cancel_at_period_end = true, updated_at = now() WHERE id = $1;

-- SubscriptionUpdateStatus moves a subscription to status to_status; a
-- cancellation records when, and the status it was canceled from.
-- name: SubscriptionUpdateStatus :exec
UPDATE subscriptions SET status = @to_status::subscription_status,
        canceled_at = CASE WHEN @to_status::subscription_status = 'canceled' THEN @now::timestamptz END,
        canceled_from = CASE WHEN @to_status::subscription_status = 'canceled' THEN @from_status::subscription_status END,
        sync_version = sync_version + 1, updated_at = now() WHERE id = @id;

-- SubscriptionBumpSyncVersion makes the gateway's record of a
-- subscription stale, so that the next sync writes it again.
-- name: SubscriptionBumpSyncVersion :exec
UPDATE subscriptions SET sync_version = sync_version + 1 WHERE id = $1;

-- name: SubscriptionMarkSynced :exec
UPDATE subscriptions SET synced_version = GREATEST(synced_version, $2) WHERE id = $1;

-- name: SubscriptionChangePlan :exec
UPDATE subscriptions SET plan_version_id = $2, sync_version = sync_version + 1, updated_at = now()
    WHERE id = $1;

-- SubscriptionMarkChanged records a change the gateway must see.
-- name: SubscriptionMarkChanged :exec
UPDATE subscriptions SET sync_version = sync_version + 1, updated_at = now() WHERE id = $1;

-- SubscriptionListDueIDs lists the live subscriptions whose period or
-- trial ended by now.
-- name: SubscriptionListDueIDs :many
SELECT id FROM subscriptions WHERE status <> 'canceled'
    AND (current_period_end <= @now OR (status = 'trialing' AND trial_ends_at <= @now)) ORDER BY id;

-- name: SubscriptionRollPeriod :exec
UPDATE subscriptions SET current_period_start = $2, current_period_end = $3,
        sync_version = sync_version + 1, updated_at = now() WHERE id = $1;
