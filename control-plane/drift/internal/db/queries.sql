-- SubscriptionListLive lists the live subscriptions in (after, up_to], in id
-- order, with their period, plan quota terms, the sum of the period's
-- quota adjustments and when their current plan version took effect: the
-- first history row of the version since the last row of another
-- (status changes add rows of the same version), the period's start when
-- there is none.
-- name: SubscriptionListLive :many
SELECT s.id, s.current_period_start, s.current_period_end, v.quota_requests, v.quota_hard,
    COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
        WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint AS adjustments,
    COALESCE((SELECT min(h.effective_at) FROM subscription_history h
        WHERE h.subscription_id = s.id AND h.plan_version_id = s.plan_version_id
            AND h.id > COALESCE((SELECT max(o.id) FROM subscription_history o
                WHERE o.subscription_id = s.id AND o.plan_version_id <> s.plan_version_id), 0)),
        s.current_period_start)::timestamptz AS version_since
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
WHERE s.status IN ('trialing', 'active', 'past_due', 'suspended') AND s.id > @after AND s.id <= @up_to
ORDER BY s.id LIMIT @row_limit;

-- name: RunGetLastReport :one
SELECT report FROM usage_reconcile_runs ORDER BY started_at DESC, id DESC LIMIT 1;

-- name: RunInsert :exec
INSERT INTO usage_reconcile_runs (started_at, finished_at, report) VALUES ($1, $2, $3);

-- RunDeleteOld drops all but the newest kept runs.
-- name: RunDeleteOld :exec
DELETE FROM usage_reconcile_runs WHERE id IN (
    SELECT id FROM usage_reconcile_runs ORDER BY started_at DESC, id DESC OFFSET @kept);

-- MeterSinceList gives, for each meter the current plan version of the
-- subscriptions charges, since when every version in force has charged a
-- meter of that slug without a break: the first history row after the
-- last row of a version that did not (status changes add rows of the same
-- version). The processors count a meter as long as the subscription's
-- record names it, so a meter that an earlier version charged too has
-- counted since then, and one the current version added only since the
-- change.
-- name: MeterSinceList :many
SELECT s.id AS subscription_id, m.slug,
    COALESCE((SELECT min(h.effective_at) FROM subscription_history h
        WHERE h.subscription_id = s.id AND h.id > COALESCE((SELECT max(o.id) FROM subscription_history o
            WHERE o.subscription_id = s.id AND NOT EXISTS (
                SELECT 1 FROM plan_version_charges oc JOIN meters om ON om.id = oc.meter_id
                WHERE oc.plan_version_id = o.plan_version_id AND om.slug = m.slug)), 0)),
        s.current_period_start)::timestamptz AS since
FROM subscriptions s
    JOIN plan_version_charges c ON c.plan_version_id = s.plan_version_id
    JOIN meters m ON m.id = c.meter_id
WHERE s.id = ANY(@ids::uuid[]);
