-- SubscriptionExtendTrial lengthens a trialing subscription's trial by
-- days. With starting set (a subscription created in this transaction)
-- an active subscription without a trial starts one, of days from now.
-- No row: the subscription is in neither case.
-- name: SubscriptionExtendTrial :one
UPDATE subscriptions
SET status = 'trialing', trial_ends_at = COALESCE(trial_ends_at, @now::timestamptz) + make_interval(days => @days::int), updated_at = now()
WHERE id = @id AND (status = 'trialing' OR (@starting::boolean AND status = 'active' AND trial_ends_at IS NULL))
RETURNING trial_ends_at;
