-- +goose Up
-- A subscription's billing anchor: the start its periods are stepped from.
-- Periods end on the anchor's day of the month at its time of day, held at
-- the month's last day in shorter months, so that a subscription started
-- on Jan 31 renews on Feb 28 (29 in leap years), then Mar 31, rather than
-- drifting to Mar 3, Apr 3. A subscription that takes over the period of a
-- canceled one (carried_from) keeps that one's anchor, so its periods keep
-- the boundaries it took over.
ALTER TABLE subscriptions ADD COLUMN billing_anchor timestamptz;

-- Existing subscriptions are anchored at their current period's start:
-- the boundary the gateway counts on now. Their periods were rolled by
-- adding a month or a year (Jan 31, Mar 3, Apr 3, ...), so an anchor
-- before it (their first start) would put the next boundaries off the
-- ones the gateway and the periods recorded are on; the billing periods
-- that start before the anchor are stepped as they were rolled. A
-- subscription that took over a canceled one's period is on that one's
-- boundaries, so its own current period's start serves as well.
UPDATE subscriptions SET billing_anchor = current_period_start;

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
