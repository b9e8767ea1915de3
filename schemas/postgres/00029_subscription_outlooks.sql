-- +goose Up
-- Where each live subscription's current period stands and is heading:
-- the preview's cost so far and the projection to the period's end, per
-- meter too, as the billing_outlooks job last computed it. Budgets and
-- provider analytics read it instead of computing a preview per
-- subscription and request. One row per subscription, replaced each run;
-- a row whose period is no longer the subscription's current one is
-- stale (the job rewrites it on its next pass).
CREATE TABLE subscription_outlooks (
    subscription_id uuid PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL CHECK (period_end > period_start),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    cost_so_far     numeric NOT NULL,
    projected       numeric NOT NULL,
    projected_low   numeric NOT NULL,
    projected_high  numeric NOT NULL,
    -- meters is an array of {meter, used, projected, projected_low,
    -- projected_high, quota, quota_hard, runs_out_at}: decimals as
    -- strings, quota and runs_out_at null when there is none.
    meters          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(meters) = 'array'),
    computed_at     timestamptz NOT NULL
);

-- The job refreshes the rows computed longest ago first.
CREATE INDEX subscription_outlooks_computed_at ON subscription_outlooks (computed_at);

-- +goose Down
DROP TABLE subscription_outlooks;
