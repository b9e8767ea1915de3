-- +goose Up
-- Budgets: an amount a consumer organization means to spend in a period,
-- on one subscription or on all its subscriptions in one currency, and the
-- percents of it whose crossing it is told of. A hard budget (subscription
-- budgets only) also blocks the subscription at the gateway once its cost
-- reaches the amount.
CREATE TABLE budgets (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- NULL: the whole organization, in currency.
    subscription_id uuid REFERENCES subscriptions (id) ON DELETE CASCADE,
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount          numeric(20, 6) NOT NULL CHECK (amount > 0),
    -- Percents of amount, 1..1000, distinct and ascending (the service
    -- sorts them), at most 10.
    thresholds      smallint[] NOT NULL DEFAULT '{50,80,100}'
        CHECK (cardinality(thresholds) BETWEEN 1 AND 10 AND 0 < ALL (thresholds) AND 1000 >= ALL (thresholds)),
    hard            boolean NOT NULL DEFAULT false CHECK (NOT hard OR subscription_id IS NOT NULL),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- One budget per subscription, one organization-wide budget per
-- organization and currency.
CREATE UNIQUE INDEX budgets_subscription_key ON budgets (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE UNIQUE INDEX budgets_org_currency_key ON budgets (organization_id, currency) WHERE subscription_id IS NULL;
CREATE INDEX budgets_org_idx ON budgets (organization_id, created_at, id);

-- The notices sent, each once per budget, period, threshold, basis (the
-- cost so far or the projection) and channel: the row is inserted in the
-- transaction that publishes the webhook or queues the email, so a replay
-- or a second evaluator finds it and sends nothing. amount and cost are
-- the budget's amount and the cost that crossed it when it was sent (a
-- raised amount re-arms the thresholds it moved above that cost).
CREATE TABLE budget_notices (
    budget_id    uuid NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    threshold    smallint NOT NULL,
    basis        text NOT NULL CHECK (basis IN ('actual', 'projected')),
    channel      text NOT NULL CHECK (channel IN ('email', 'webhook')),
    amount       numeric NOT NULL,
    cost         numeric NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (budget_id, period_start, threshold, basis, channel)
);

-- +goose Down
DROP TABLE budget_notices;
DROP TABLE budgets;
