-- OutlookDue lists live subscriptions (trialing, active, past_due) whose
-- outlook is missing, of another period, or computed before
-- @stale_before: the never computed first, then the oldest; those the
-- run tried already (@tried: one that failed keeps its old row) left out.
-- name: OutlookDue :many
SELECT s.id FROM subscriptions s
LEFT JOIN subscription_outlooks o ON o.subscription_id = s.id
WHERE s.status IN ('trialing', 'active', 'past_due')
  AND (o.subscription_id IS NULL OR o.computed_at < @stale_before OR o.period_start <> s.current_period_start)
  AND NOT (s.id = ANY (@tried::uuid[]))
ORDER BY o.computed_at NULLS FIRST, s.id
LIMIT @max_rows;

-- name: OutlookUpsert :exec
INSERT INTO subscription_outlooks (subscription_id, period_start, period_end, currency, cost_so_far,
    projected, projected_low, projected_high, meters, computed_at)
VALUES (@subscription_id, @period_start, @period_end, @currency, @cost_so_far,
    @projected, @projected_low, @projected_high, @meters, @computed_at)
ON CONFLICT (subscription_id) DO UPDATE SET
    period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end, currency = EXCLUDED.currency,
    cost_so_far = EXCLUDED.cost_so_far, projected = EXCLUDED.projected, projected_low = EXCLUDED.projected_low,
    projected_high = EXCLUDED.projected_high, meters = EXCLUDED.meters, computed_at = EXCLUDED.computed_at
WHERE subscription_outlooks.computed_at <= EXCLUDED.computed_at;

-- OutlookDeleteEnded removes the outlooks of subscriptions no longer
-- live: their periods are not heading anywhere.
-- name: OutlookDeleteEnded :execrows
DELETE FROM subscription_outlooks o USING subscriptions s
WHERE s.id = o.subscription_id AND s.status NOT IN ('trialing', 'active', 'past_due');

-- PeriodsOverlapping are the recorded billing periods of a subscription
-- that overlap [@from, @to), in order.
-- name: PeriodsOverlapping :many
SELECT period_start, period_end, trial FROM billing_periods
WHERE subscription_id = @subscription_id AND period_start < @window_to AND period_end > @window_from
ORDER BY period_start;
