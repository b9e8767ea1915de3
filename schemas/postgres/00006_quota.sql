-- +goose Up
-- The quota loop: notices of threshold crossings, quota adjustments, and
-- the usage drift checks between Redis counters and ClickHouse.

-- Notices sent about a quota crossing, once per subscription, period,
-- threshold, quota in force and channel. A credit raises the quota, and the
-- thresholds of the new quota are announced anew.
CREATE TABLE quota_notices (
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    period_start    timestamptz NOT NULL,
    threshold       smallint NOT NULL CHECK (threshold IN (80, 90, 100)),
    quota           bigint NOT NULL CHECK (quota > 0),
    channel         text NOT NULL CHECK (channel IN ('email', 'webhook')),
    used            bigint NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, period_start, threshold, quota, channel)
);

-- Explicit changes to one period's request quota: a credit adds requests,
-- a reset adds what makes the remaining quota whole again. The quota the
-- gateway enforces is the plan's plus the period's adjustments.
CREATE TABLE quota_adjustments (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    period_start    timestamptz NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('credit', 'reset')),
    requests        bigint NOT NULL CHECK (requests >= 0),
    used_at_change  bigint NOT NULL,
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    actor           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quota_adjustments_period_idx ON quota_adjustments (subscription_id, period_start);

-- Usage drift checks: what each run found and did, newest first.
CREATE TABLE usage_reconcile_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    report      jsonb NOT NULL
);
CREATE INDEX usage_reconcile_runs_started_idx ON usage_reconcile_runs (started_at DESC);

-- +goose Down
DROP TABLE usage_reconcile_runs;
DROP TABLE quota_adjustments;
DROP TABLE quota_notices;
