-- +goose Up
-- A subscription's billing anchor: the start its periods are stepped from.
-- Periods end on the anchor's day of the month at its time of day, held at
-- the month's last day in shorter months, so that a subscription started
-- on Jan 31 renews on Feb 28 (29 in leap years), then Mar 31, rather than
-- drifting to Mar 3, Apr 3. A subscription that takes over the period of a
-- canceled one (carried_from) keeps that one's anchor, so its periods keep
-- the boundaries it took over.
ALTER TABLE subscriptions ADD COLUMN billing_anchor timestamptz;

-- Existing subscriptions are anchored at their first start: the earliest
-- row of their pricing history (or their current period's start, with no
-- history); one that took over a canceled one's period, at the anchor of
-- the first of the chain it carries on.
WITH RECURSIVE own AS (
    SELECT s.id, s.carried_from,
        COALESCE((SELECT min(h.effective_at) FROM subscription_history h WHERE h.subscription_id = s.id),
            s.current_period_start) AS anchor
    FROM subscriptions s
), chain AS (
    SELECT o.id, o.anchor, o.carried_from AS up, 0 AS depth FROM own o
    UNION ALL
    SELECT c.id, o.anchor, o.carried_from, c.depth + 1
    FROM chain c JOIN own o ON o.id = c.up
    WHERE c.depth < 1000
)
UPDATE subscriptions s SET billing_anchor = r.anchor
FROM (SELECT DISTINCT ON (id) id, anchor FROM chain ORDER BY id, depth DESC) r
WHERE r.id = s.id;

-- A subscription inserted without an anchor is anchored at its current
-- period's start: the start of a new subscription.
-- +goose StatementBegin
CREATE FUNCTION subscriptions_default_anchor() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.billing_anchor := COALESCE(NEW.billing_anchor, NEW.current_period_start);
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER subscriptions_default_anchor BEFORE INSERT ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION subscriptions_default_anchor();

ALTER TABLE subscriptions ALTER COLUMN billing_anchor SET NOT NULL;

-- +goose Down
DROP TRIGGER subscriptions_default_anchor ON subscriptions;
DROP FUNCTION subscriptions_default_anchor();
ALTER TABLE subscriptions DROP COLUMN billing_anchor;
