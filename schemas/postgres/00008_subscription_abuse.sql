-- +goose Up
-- Subscriptions and keys that cannot be escaped by cancelling.

-- A subscription that follows a canceled one of the same organization and
-- API inside that one's billing period takes over the period (carried_from
-- names it): the period's bounds, and what was used of its request quota
-- as a 'carried' quota adjustment (see below).
ALTER TABLE subscriptions ADD COLUMN carried_from uuid REFERENCES subscriptions (id) ON DELETE SET NULL;

-- canceled_from is the status a subscription was canceled from. One
-- canceled while suspended (an admin's sanction) or past_due (a missed
-- payment) holds its organization and API: no new subscription until an
-- admin releases the hold (hold_released_at, hold_released_by).
ALTER TABLE subscriptions
    ADD COLUMN canceled_from    subscription_status,
    ADD COLUMN hold_released_at timestamptz,
    ADD COLUMN hold_released_by text;
CREATE INDEX subscriptions_held_idx ON subscriptions (organization_id, api_id)
    WHERE status = 'canceled' AND canceled_from IN ('suspended', 'past_due') AND hold_released_at IS NULL;
CREATE INDEX subscriptions_org_api_idx ON subscriptions (organization_id, api_id, created_at);

-- A key an admin suspended is resumed only by an admin.
ALTER TABLE api_keys ADD COLUMN suspended_by_admin boolean NOT NULL DEFAULT false;

-- A 'carried' adjustment brings over what the canceled subscription had
-- left of the period's quota: minus what it used, plus its own
-- adjustments (a provider's credit goes with it), so it may have any sign.
ALTER TABLE quota_adjustments DROP CONSTRAINT quota_adjustments_kind_check;
ALTER TABLE quota_adjustments DROP CONSTRAINT quota_adjustments_requests_check;
ALTER TABLE quota_adjustments ADD CONSTRAINT quota_adjustments_kind_check CHECK (kind IN ('credit', 'reset', 'carried'));
ALTER TABLE quota_adjustments ADD CONSTRAINT quota_adjustments_requests_check
    CHECK (kind = 'carried' OR requests >= 0);

-- +goose Down
DELETE FROM quota_adjustments WHERE kind = 'carried';
ALTER TABLE quota_adjustments DROP CONSTRAINT quota_adjustments_requests_check;
ALTER TABLE quota_adjustments DROP CONSTRAINT quota_adjustments_kind_check;
ALTER TABLE quota_adjustments ADD CONSTRAINT quota_adjustments_kind_check CHECK (kind IN ('credit', 'reset'));
ALTER TABLE quota_adjustments ADD CONSTRAINT quota_adjustments_requests_check CHECK (requests >= 0);
ALTER TABLE api_keys DROP COLUMN suspended_by_admin;
DROP INDEX subscriptions_org_api_idx;
DROP INDEX subscriptions_held_idx;
ALTER TABLE subscriptions DROP COLUMN hold_released_by, DROP COLUMN hold_released_at, DROP COLUMN canceled_from;
ALTER TABLE subscriptions DROP COLUMN carried_from;
