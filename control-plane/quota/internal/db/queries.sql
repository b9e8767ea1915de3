-- SubscriptionNoticeTarget reads who the notices of a subscription go to:
-- its organization, API and plan, and the subscriber's email when the
-- subscriber has a user row.
-- name: SubscriptionNoticeTarget :one
SELECT s.organization_id, s.api_id, v.plan_id, s.status::text AS status, a.name, u.email
FROM subscriptions s
JOIN plan_versions v ON v.id = s.plan_version_id
JOIN apis a ON a.id = s.api_id
LEFT JOIN users u ON u.subject = s.subscriber
WHERE s.id = $1;

-- NoticeClaim inserts the row of a crossing's notice on one channel; no
-- row is inserted when the notice was claimed before. meter is the
-- meter's slug, '' for the request quota.
-- name: NoticeClaim :execrows
INSERT INTO quota_notices (subscription_id, period_start, threshold, quota, channel, used, meter)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING;

-- SubscriptionQuotaStatus reads a subscription's period, its plan's quota
-- terms and the sum of the period's adjustments.
-- name: SubscriptionQuotaStatus :one
SELECT s.current_period_start, s.current_period_end, v.quota_requests, v.quota_hard,
    coalesce((SELECT sum(a.requests) FROM quota_adjustments a
        WHERE a.subscription_id = s.id AND a.period_start = s.current_period_start), 0)::bigint AS adjustments
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
WHERE s.id = $1;

-- name: AdjustmentInsert :one
INSERT INTO quota_adjustments (subscription_id, period_start, kind, requests, used_at_change, reason, actor)
    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at;

-- MeterFieldOfSubscription reads the field a meter of the subscription's
-- API aggregates, which sets the scale of its quota's integers.
-- name: MeterFieldOfSubscription :one
SELECT m.field FROM meters m JOIN subscriptions s ON s.api_id = m.api_id
WHERE s.id = @subscription_id AND m.slug = @slug;
