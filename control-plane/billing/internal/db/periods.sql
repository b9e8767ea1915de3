-- Billing periods and usage snapshots: which subscriptions have ended
-- periods to record, the pricing history that splits a period into
-- plan-version segments, the meters a version charges, the snapshot a
-- close stores, and the recount of late usage.

-- PeriodCandidateList lists, in id order after @after, the subscriptions
-- that may have an ended period not yet recorded: the last one recorded
-- (or the subscription's start, when none is) is before the current
-- period, or the current period has ended (not rolled yet, or the
-- subscription is canceled). A
-- canceled subscription whose last period is recorded is done.
-- name: PeriodCandidateList :many
SELECT s.id, s.status::text AS status, s.current_period_start, s.current_period_end, s.trial_ends_at, s.canceled_at,
    s.billing_anchor,
    -- The zero time (year 1) stands for no period recorded yet.
    COALESCE(lp.period_end, '0001-01-01 00:00:00+00'::timestamptz)::timestamptz AS last_end,
    COALESCE((SELECT min(h.effective_at) FROM subscription_history h WHERE h.subscription_id = s.id),
        s.current_period_start)::timestamptz AS first_at
FROM subscriptions s
LEFT JOIN LATERAL (
    SELECT b.period_end FROM billing_periods b WHERE b.subscription_id = s.id ORDER BY b.period_start DESC LIMIT 1
) lp ON true
WHERE s.id > @after
  AND (COALESCE(lp.period_end, (SELECT min(h.effective_at) FROM subscription_history h WHERE h.subscription_id = s.id))
          < s.current_period_start
       OR s.current_period_end <= @now::timestamptz)
  AND NOT (s.status = 'canceled' AND lp.period_end IS NOT NULL AND lp.period_end >= s.current_period_end)
ORDER BY s.id
LIMIT @row_limit;

-- HistoryListBySubscriptions reads the pricing history of subscriptions,
-- each in the order it happened, with the interval of each row's version.
-- name: HistoryListBySubscriptions :many
SELECT h.subscription_id, h.plan_version_id, h.status::text AS status, h.effective_at, v.interval::text AS interval
FROM subscription_history h JOIN plan_versions v ON v.id = h.plan_version_id
WHERE h.subscription_id = ANY(@subscription_ids::uuid[])
ORDER BY h.subscription_id, h.effective_at, h.id;

-- PeriodInsertBatch records periods; one already recorded (same
-- subscription and start) is left as it is, so a run twice records once.
-- name: PeriodInsertBatch :execrows
INSERT INTO billing_periods (subscription_id, period_start, period_end, trial)
SELECT unnest(@subscription_ids::uuid[]), unnest(@starts::timestamptz[]), unnest(@ends::timestamptz[]), unnest(@trials::boolean[])
ON CONFLICT (subscription_id, period_start) DO NOTHING;

-- PeriodListDue lists open periods that ended at or before @cutoff (their
-- end plus the grace has passed), at most @row_limit, in the order of
-- their subscriptions (ClickHouse's usage_events is sorted by subject:
-- a batch of neighbouring subscriptions reads neighbouring rows), with
-- what of their subscription bounds the billable time.
-- name: PeriodListDue :many
SELECT b.id, b.subscription_id, b.period_start, b.period_end, b.trial, s.trial_ends_at, s.canceled_at
FROM billing_periods b JOIN subscriptions s ON s.id = b.subscription_id
WHERE b.state = 'open' AND b.period_end <= @cutoff::timestamptz
ORDER BY b.subscription_id, b.period_start
LIMIT @row_limit;

-- PeriodCloseBatch closes the periods of @ids still open and returns
-- those it closed. Its row locks make a concurrent close of the same
-- periods wait, then find them closed: each is snapshotted once.
-- name: PeriodCloseBatch :many
UPDATE billing_periods SET state = 'closed', closed_at = @closed_at::timestamptz
WHERE id = ANY(@ids::uuid[]) AND state = 'open'
RETURNING id;

-- name: SnapshotInsertBatch :many
INSERT INTO usage_snapshots (billing_period_id, taken_at, through_offsets)
SELECT unnest(@period_ids::uuid[]), unnest(@taken_ats::timestamptz[]), unnest(@offsets::jsonb[])
RETURNING id, billing_period_id;

-- name: SnapshotLineInsertBatch :exec
INSERT INTO usage_snapshot_lines (snapshot_id, plan_version_id, segment_start, segment_end, meter_slug, quantity)
SELECT unnest(@snapshot_ids::uuid[]), unnest(@plan_version_ids::uuid[]), unnest(@segment_starts::timestamptz[]),
    unnest(@segment_ends::timestamptz[]), unnest(@meter_slugs::text[]), unnest(@quantities::numeric[]);

-- MeterListByVersions reads the meters each plan version charges, in the
-- order of their slugs.
-- name: MeterListByVersions :many
SELECT c.plan_version_id, m.slug, m.name, m.aggregation::text AS aggregation, m.field,
    m.filter_methods, m.filter_routes, m.filter_status_classes
FROM plan_version_charges c JOIN meters m ON m.id = c.meter_id
WHERE c.plan_version_id = ANY(@version_ids::uuid[])
ORDER BY c.plan_version_id, m.slug;

-- name: PeriodGetForSegments :one
SELECT b.id, b.subscription_id, b.period_start, b.period_end, b.trial, b.state::text AS state,
    s.trial_ends_at, s.canceled_at
FROM billing_periods b JOIN subscriptions s ON s.id = b.subscription_id
WHERE b.id = $1;

-- name: SnapshotGetByPeriod :one
SELECT id, billing_period_id, taken_at, through_offsets FROM usage_snapshots WHERE billing_period_id = $1;

-- name: SnapshotLineList :many
SELECT plan_version_id, segment_start, segment_end, meter_slug, quantity
FROM usage_snapshot_lines WHERE snapshot_id = $1
ORDER BY segment_start, meter_slug;

-- PeriodListLate lists the invoiced periods that ended at or after
-- @since (inside the late window), in the order of their subscriptions
-- (as PeriodListDue, for ClickHouse) after (after_sub, after_start).
-- name: PeriodListLate :many
SELECT b.id, b.subscription_id, b.period_start, b.period_end, s.trial_ends_at, s.canceled_at
FROM billing_periods b JOIN subscriptions s ON s.id = b.subscription_id
WHERE b.state = 'invoiced' AND b.period_end >= @since::timestamptz
  AND (b.subscription_id, b.period_start) > (@after_sub::uuid, @after_start::timestamptz)
ORDER BY b.subscription_id, b.period_start
LIMIT @row_limit;

-- SnapshotLineListByPeriods reads the snapshot lines of periods.
-- name: SnapshotLineListByPeriods :many
SELECT u.billing_period_id, l.plan_version_id, l.segment_start, l.segment_end, l.meter_slug, l.quantity
FROM usage_snapshots u JOIN usage_snapshot_lines l ON l.snapshot_id = u.id
WHERE u.billing_period_id = ANY(@period_ids::uuid[])
ORDER BY u.billing_period_id, l.segment_start, l.meter_slug;

-- PeriodLockForLate takes a period's row lock, so that two recounts of it
-- cannot both record the same late usage.
-- name: PeriodLockForLate :one
SELECT id FROM billing_periods WHERE id = $1 FOR UPDATE;

-- LateUsageSums sums the late usage already recorded for a period per
-- segment and meter.
-- name: LateUsageSums :many
SELECT segment_start::timestamptz AS segment_start, meter_slug::text AS meter_slug, sum(quantity)::numeric AS quantity
FROM billing_adjustments
WHERE billing_period_id = $1 AND kind = 'late_usage' AND segment_start IS NOT NULL
GROUP BY segment_start, meter_slug;

-- name: LateUsageInsert :exec
INSERT INTO billing_adjustments (subscription_id, billing_period_id, kind, meter_slug, quantity, reason, actor, plan_version_id, segment_start, created_at)
VALUES (@subscription_id, @billing_period_id, 'late_usage', @meter_slug, @quantity, @reason, @actor, @plan_version_id, @segment_start, @created_at);
