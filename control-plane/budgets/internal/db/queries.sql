-- name: BudgetInsert :one
INSERT INTO budgets (organization_id, subscription_id, currency, amount, thresholds, hard)
VALUES (@organization_id, @subscription_id, @currency, @amount, @thresholds, @hard)
RETURNING *;

-- name: BudgetGet :one
SELECT * FROM budgets WHERE id = $1;

-- BudgetLock reads a budget for a change, holding its row until the
-- transaction ends.
-- name: BudgetLock :one
SELECT * FROM budgets WHERE id = $1 FOR UPDATE;

-- name: BudgetUpdate :one
UPDATE budgets SET amount = @amount, thresholds = @thresholds, hard = @hard, updated_at = now()
WHERE id = @id RETURNING *;

-- name: BudgetDelete :exec
DELETE FROM budgets WHERE id = $1;

-- BudgetsOfOrganization pages through an organization's budgets, oldest
-- first.
-- name: BudgetsOfOrganization :many
SELECT * FROM budgets
WHERE organization_id = @organization_id
  AND (sqlc.narg(after_at)::timestamptz IS NULL OR (created_at, id) > (sqlc.narg(after_at)::timestamptz, @after_id::uuid))
ORDER BY created_at, id
LIMIT @row_limit;

-- SubscriptionForBudget reads what a budget of the subscription needs:
-- its organization and its plan version's currency. FOR SHARE keeps the
-- subscription from being deleted before the budget's row is in.
-- name: SubscriptionForBudget :one
SELECT s.organization_id, v.currency
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
WHERE s.id = $1
FOR SHARE OF s;

-- NoticeClaim inserts the row of one notice, or takes the existing row
-- for a send again when the notice is new in money terms: the threshold's
-- level at the current amount lies above the cost the row last reported
-- (a raise moved it up and the cost, or projection, caught up), and the
-- row went out fewer than @max_sends times this period. It affects no row
-- otherwise: a replay, another evaluator that got there first, or an
-- amount lowered back, which moves no level above what was told.
-- name: NoticeClaim :execrows
INSERT INTO budget_notices AS n (budget_id, period_start, threshold, basis, channel, amount, cost)
VALUES (@budget_id, @period_start, @threshold, @basis, @channel, @amount, @cost)
ON CONFLICT (budget_id, period_start, threshold, basis, channel) DO UPDATE
SET amount = excluded.amount, cost = excluded.cost, sent_at = now(), sends = n.sends + 1
WHERE excluded.threshold::numeric * excluded.amount / 100 > n.cost AND n.sends < @max_sends::smallint;

-- SubscriptionBudgetsToEvaluate pages through the subscription budgets
-- whose subscription has an outlook, with its period, cost so far and
-- projection.
-- name: SubscriptionBudgetsToEvaluate :many
SELECT b.id, b.organization_id, b.subscription_id, b.currency, b.amount, b.thresholds,
    o.period_start, o.period_end, o.currency AS outlook_currency, o.cost_so_far, o.projected
FROM budgets b JOIN subscription_outlooks o ON o.subscription_id = b.subscription_id
WHERE b.id > @after_id
ORDER BY b.id
LIMIT @row_limit;

-- OrganizationBudgetsToEvaluate pages through the organization-wide
-- budgets.
-- name: OrganizationBudgetsToEvaluate :many
SELECT b.id, b.organization_id, b.currency, b.amount, b.thresholds
FROM budgets b
WHERE b.subscription_id IS NULL AND b.id > @after_id
ORDER BY b.id
LIMIT @row_limit;

-- OrganizationMonthInvoices lists, for each of the organization-wide
-- budgets @budget_ids, the invoices (drafts included, void ones not) in
-- the budget's currency of its organization's subscriptions whose period
-- overlaps [@month_start, @month_end).
-- name: OrganizationMonthInvoices :many
SELECT b.id AS budget_id, i.period_start, i.period_end, i.total
FROM budgets b
JOIN subscriptions s ON s.organization_id = b.organization_id
JOIN invoices i ON i.subscription_id = s.id
WHERE b.id = ANY(@budget_ids::uuid[]) AND i.currency = b.currency AND i.status <> 'void'
    AND i.period_start < @month_end AND i.period_end > @month_start;

-- OrganizationMonthOutlooks lists, for each of the organization-wide
-- budgets @budget_ids, the outlooks in the budget's currency of its
-- organization's subscriptions whose period overlaps [@month_start,
-- @month_end) and has no invoice yet (once it has, the invoice counts
-- instead), and whether the subscription goes on after that period.
-- name: OrganizationMonthOutlooks :many
SELECT b.id AS budget_id, o.period_start, o.period_end, o.cost_so_far, o.projected, o.computed_at,
    (s.status IN ('trialing', 'active', 'past_due') AND NOT s.cancel_at_period_end)::boolean AS renews
FROM budgets b
JOIN subscriptions s ON s.organization_id = b.organization_id
JOIN subscription_outlooks o ON o.subscription_id = s.id
WHERE b.id = ANY(@budget_ids::uuid[]) AND o.currency = b.currency
    AND o.period_start < @month_end AND o.period_end > @month_start
    AND NOT EXISTS (SELECT 1 FROM invoices i
        WHERE i.subscription_id = o.subscription_id AND i.period_start = o.period_start AND i.status <> 'void');

-- BudgetNoticeTarget reads what a budget's email says and who it goes
-- to: the budget, the name of the subscription's API (NULL for an
-- organization-wide budget) and the organization's name.
-- name: BudgetNoticeTarget :one
SELECT b.organization_id, b.subscription_id, b.currency, b.amount, b.hard, o.name AS organization_name,
    coalesce((SELECT a.name FROM subscriptions s JOIN apis a ON a.id = s.api_id WHERE s.id = b.subscription_id), '')::text AS api_name
FROM budgets b JOIN organizations o ON o.id = b.organization_id
WHERE b.id = $1;

-- OrganizationEmails lists the addresses of an organization's members,
-- at most @max_rows of them.
-- name: OrganizationEmails :many
SELECT DISTINCT u.email
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.organization_id = @organization_id
ORDER BY u.email
LIMIT @max_rows;

-- PlanCurrenciesOfSubscriptions reads the currency of the subscriptions'
-- plan versions now: a hard budget in another one is not enforced.
-- name: PlanCurrenciesOfSubscriptions :many
SELECT s.id, v.currency
FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
WHERE s.id = ANY(@subscription_ids::uuid[]);

-- HardBudgetsOfLiveSubscriptions pages through the hard budgets of the
-- subscriptions not canceled, with the currency of their plan versions
-- now: the evaluation counts those the gateway cannot enforce.
-- name: HardBudgetsOfLiveSubscriptions :many
SELECT b.id, b.organization_id, b.subscription_id, b.currency, v.currency AS version_currency
FROM budgets b
JOIN subscriptions s ON s.id = b.subscription_id
JOIN plan_versions v ON v.id = s.plan_version_id
WHERE b.hard AND s.status <> 'canceled' AND b.id > @after_id
ORDER BY b.id
LIMIT @row_limit;
