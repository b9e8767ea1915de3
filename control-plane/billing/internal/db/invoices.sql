-- Invoices: drafts per closed period, their lines, finalization under a
-- gapless number, status changes, credits, adjustments and the
-- promotions an invoice applies.

-- InvoiceBillingContext is what an invoice of a subscription needs to
-- know of it: the customer, the issuer (the provider of the API), the
-- current plan version's net terms.
-- name: InvoiceBillingContext :one
SELECT s.organization_id AS customer_id, a.organization_id AS issuer_id, s.plan_version_id, v.net_days
FROM subscriptions s
JOIN apis a ON a.id = s.api_id
JOIN plan_versions v ON v.id = s.plan_version_id
WHERE s.id = $1;

-- PeriodsToInvoice are the closed periods without an invoice, oldest
-- first, so a subscription's periods are billed in order.
-- name: PeriodsToInvoice :many
SELECT p.id, p.subscription_id, p.period_start, p.period_end, p.trial
FROM billing_periods p
WHERE p.state = 'closed' AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.billing_period_id = p.id)
ORDER BY p.period_end, p.id
LIMIT $1;

-- name: BillingPeriodGet :one
SELECT id, subscription_id, period_start, period_end, trial, state FROM billing_periods WHERE id = $1;

-- name: BillingPeriodMarkInvoiced :exec
UPDATE billing_periods SET state = 'invoiced' WHERE id = $1 AND state = 'closed';

-- InvoiceDraftInsert creates a period's draft; a second one for the same
-- period is nothing (billing_period_id is unique), so a job run twice
-- builds one invoice.
-- name: InvoiceDraftInsert :one
INSERT INTO invoices (issuer_id, customer_id, subscription_id, billing_period_id, currency, period_start, period_end, net_days,
    created_at, updated_at)
VALUES (@issuer_id, @customer_id, @subscription_id, @billing_period_id, @currency, @period_start, @period_end, @net_days,
    @created_at, @created_at)
ON CONFLICT (billing_period_id) DO NOTHING
RETURNING id;

-- name: InvoiceGet :one
SELECT id, issuer_id, customer_id, subscription_id, billing_period_id, status, number, currency, period_start, period_end,
    subtotal, discount, tax, credit_applied, total, amount_due, net_days, cites, finalized_at, due_at, paid_at, voided_at,
    overdue_at, created_at, updated_at
FROM invoices WHERE id = $1;

-- InvoicesByNumber: numbers are unique per issuer, so one number may
-- name invoices of several issuers.
-- name: InvoicesByNumber :many
SELECT id, issuer_id, customer_id FROM invoices WHERE number = $1 ORDER BY id;

-- name: InvoiceLock :one
SELECT id, issuer_id, customer_id, subscription_id, billing_period_id, status, number, currency, period_start, period_end,
    subtotal, discount, tax, credit_applied, total, amount_due, net_days, cites, finalized_at, due_at, paid_at, voided_at,
    overdue_at, created_at, updated_at
FROM invoices WHERE id = $1 FOR UPDATE;

-- name: InvoiceDraftUpdate :exec
UPDATE invoices SET currency = @currency, subtotal = @subtotal, discount = @discount, tax = @tax,
    credit_applied = @credit_applied, total = @total, amount_due = @amount_due, net_days = @net_days, cites = @cites,
    updated_at = now()
WHERE id = @id AND status = 'draft';

-- name: InvoiceLinesDelete :exec
DELETE FROM invoice_lines WHERE invoice_id = $1;

-- InvoiceLineInsert writes an invoice's lines, sent in one batch.
-- name: InvoiceLineInsert :batchexec
INSERT INTO invoice_lines (invoice_id, position, kind, description, plan_version_id, meter_slug, tier, quantity, unit_price, amount, reference)
VALUES (@invoice_id, @position, @kind, @description, sqlc.narg(plan_version_id), sqlc.narg(meter_slug), @tier, @quantity, @unit_price,
    @amount, @reference);

-- name: InvoiceLines :many
SELECT position, kind, description, plan_version_id, meter_slug, tier, quantity, unit_price, amount, reference
FROM invoice_lines WHERE invoice_id = $1 ORDER BY position;

-- DraftsToFinalize are the drafts built at or before a time, oldest
-- period first.
-- name: DraftsToFinalize :many
SELECT id FROM invoices
WHERE status = 'draft' AND created_at <= @built_before
ORDER BY period_end, id
LIMIT @max;

-- name: DraftsToRecompute :many
SELECT id FROM invoices WHERE status = 'draft' ORDER BY period_end, id LIMIT $1;

-- InvoiceEarlierDraft reports whether an earlier period of the
-- subscription is not invoiced yet (its invoice a draft, or none built):
-- periods are finalized in order, so that credits, adjustments and
-- promotions land on the earliest invoice first.
-- name: InvoiceEarlierDraft :one
SELECT EXISTS (
    SELECT 1 FROM billing_periods
    WHERE subscription_id = @subscription_id AND period_start < @period_start AND state <> 'invoiced'
);

-- InvoiceNumberNext takes the issuer's next number of the year: the
-- year's first inserts its row, later ones increment it; either way the
-- row stays locked to the end of the transaction, so concurrent
-- finalizations of one issuer take numbers one after the other, and a
-- rolled back one gives its number back.
-- name: InvoiceNumberNext :one
INSERT INTO invoice_number_sequences (issuer_id, year, last) VALUES (@issuer_id, @year, 1)
ON CONFLICT (issuer_id, year) DO UPDATE SET last = invoice_number_sequences.last + 1
RETURNING last;

-- name: IssuerPrefix :one
SELECT COALESCE((SELECT invoice_prefix FROM issuer_settings WHERE organization_id = $1), 'INV')::text;

-- name: InvoiceFinalize :exec
UPDATE invoices SET status = 'open', number = @number, finalized_at = @finalized_at, due_at = @due_at, updated_at = now()
WHERE id = @id AND status = 'draft';

-- name: InvoiceMarkPaid :exec
UPDATE invoices SET status = 'paid', paid_at = @at, updated_at = now() WHERE id = @id AND status = 'open';

-- name: InvoiceMarkVoid :exec
UPDATE invoices SET status = 'void', voided_at = @at, updated_at = now() WHERE id = @id AND status = 'open';

-- name: InvoiceMarkUncollectible :exec
UPDATE invoices SET status = 'uncollectible', updated_at = now() WHERE id = @id AND status = 'open';

-- InvoicesOverdue are the open invoices past their due date not yet
-- marked overdue.
-- name: InvoicesOverdue :many
SELECT id FROM invoices
WHERE status = 'open' AND due_at < @now AND overdue_at IS NULL
ORDER BY due_at, id
LIMIT @max;

-- name: InvoiceMarkOverdue :execrows
UPDATE invoices SET overdue_at = @at, updated_at = now() WHERE id = @id AND status = 'open' AND overdue_at IS NULL;

-- Credits.

-- name: CreditBalanceEnsure :exec
INSERT INTO credit_balances (issuer_id, customer_id, currency) VALUES (@issuer_id, @customer_id, @currency)
ON CONFLICT DO NOTHING;

-- CreditBalanceLock reads a balance under its row lock: every movement
-- takes it first, so balance_after follows the ledger one by one.
-- name: CreditBalanceLock :one
SELECT balance FROM credit_balances
WHERE issuer_id = @issuer_id AND customer_id = @customer_id AND currency = @currency
FOR UPDATE;

-- name: CreditBalanceGet :one
SELECT COALESCE((SELECT balance FROM credit_balances
    WHERE issuer_id = @issuer_id AND customer_id = @customer_id AND currency = @currency), 0)::numeric;

-- name: CreditBalanceSet :exec
UPDATE credit_balances SET balance = @balance
WHERE issuer_id = @issuer_id AND customer_id = @customer_id AND currency = @currency;

-- name: CreditLedgerInsert :one
INSERT INTO credit_ledger (issuer_id, customer_id, currency, kind, amount, balance_after, invoice_id, reason, actor)
VALUES (@issuer_id, @customer_id, @currency, @kind, @amount, @balance_after, sqlc.narg(invoice_id), @reason, @actor)
RETURNING id, created_at;

-- name: CreditBalances :many
SELECT issuer_id, customer_id, currency, balance FROM credit_balances
WHERE (@issuer_id::uuid = '00000000-0000-0000-0000-000000000000' OR issuer_id = @issuer_id)
  AND (@customer_id::uuid = '00000000-0000-0000-0000-000000000000' OR customer_id = @customer_id)
ORDER BY issuer_id, customer_id, currency;

-- name: CreditLedger :many
SELECT id, issuer_id, customer_id, currency, kind, amount, balance_after, invoice_id, reason, actor, created_at
FROM credit_ledger
WHERE issuer_id = @issuer_id AND customer_id = @customer_id AND id > @after
ORDER BY id
LIMIT @max;

-- Adjustments.

-- name: AdjustmentInsert :one
INSERT INTO billing_adjustments (subscription_id, billing_period_id, kind, meter_slug, quantity, amount, currency, reason, actor)
VALUES (@subscription_id, sqlc.narg(billing_period_id), @kind, sqlc.narg(meter_slug), sqlc.narg(quantity), sqlc.narg(amount),
    sqlc.narg(currency), @reason, @actor)
RETURNING id, created_at;

-- AdjustmentsPending are a subscription's adjustments not yet billed,
-- in the order they were made.
-- name: AdjustmentsPending :many
SELECT id, subscription_id, billing_period_id, kind, meter_slug, quantity, amount, currency, reason, actor, invoice_id, created_at,
    plan_version_id, segment_start
FROM billing_adjustments
WHERE subscription_id = $1 AND invoice_id IS NULL
ORDER BY created_at, id;

-- name: AdjustmentsBySubscription :many
SELECT id, subscription_id, billing_period_id, kind, meter_slug, quantity, amount, currency, reason, actor, invoice_id, created_at,
    plan_version_id, segment_start
FROM billing_adjustments
WHERE subscription_id = $1
ORDER BY created_at, id;

-- name: AdjustmentsByIDs :many
SELECT id, subscription_id, billing_period_id, kind, meter_slug, quantity, amount, currency, reason, actor, invoice_id, created_at,
    plan_version_id, segment_start
FROM billing_adjustments
WHERE id = ANY(@ids::uuid[]);

-- AdjustmentsMarkBilled sets the invoice of adjustments not yet billed;
-- the caller checks that it set all of them.
-- name: AdjustmentsMarkBilled :execrows
UPDATE billing_adjustments SET invoice_id = @invoice_id WHERE id = ANY(@ids::uuid[]) AND invoice_id IS NULL;

-- AdjustmentQuantity is the quantity of a meter that a period's
-- adjustments add to one of its segments: those billed on invoices not
-- voided and, with_pending, those not billed yet; an adjustment that
-- names no segment concerns the last one, last_start. The one basis of
-- both readers: an invoice prices an adjustment on top of what was billed
-- before it (without pending ones, adding those it bills itself one by
-- one), and a negative correction is checked against all of them.
-- name: AdjustmentQuantity :one
SELECT COALESCE(sum(a.quantity), 0)::numeric
FROM billing_adjustments a LEFT JOIN invoices i ON i.id = a.invoice_id
WHERE a.billing_period_id = @billing_period_id AND a.meter_slug = @meter_slug
  AND (i.status <> 'void' OR (a.invoice_id IS NULL AND @with_pending::boolean))
  AND COALESCE(a.segment_start, @last_start::timestamptz) = @segment_start::timestamptz;

-- Promotions.

-- RedemptionsForPeriod are the subscription's redemptions made before a
-- period ended and not ended before it did (an ended redemption
-- discounts no period that ends after it ended), with their promotions'
-- terms, in the order they were redeemed.
-- name: RedemptionsForPeriod :many
SELECT r.id, r.promotion_id, r.periods_applied, p.code, p.kind::text AS kind, p.value, p.currency, p.meter,
    p.duration::text AS duration, p.duration_periods, p.priority, p.stackable
FROM promotion_redemptions r JOIN promotions p ON p.id = r.promotion_id
WHERE r.subscription_id = @subscription_id AND r.redeemed_at < @period_end
  AND (r.ended_at IS NULL OR r.ended_at >= @period_end)
ORDER BY r.redeemed_at, r.id;

-- name: RedemptionsByIDs :many
SELECT r.id, r.promotion_id, r.periods_applied, p.code, p.kind::text AS kind, p.value, p.currency, p.meter,
    p.duration::text AS duration, p.duration_periods, p.priority, p.stackable
FROM promotion_redemptions r JOIN promotions p ON p.id = r.promotion_id
WHERE r.id = ANY(@ids::uuid[])
ORDER BY r.redeemed_at, r.id;

-- name: RedemptionsApplied :exec
UPDATE promotion_redemptions SET periods_applied = periods_applied + 1 WHERE id = ANY(@ids::uuid[]);

-- CustomerOf reports whether an organization holds (or held) a
-- subscription to one of the issuer's APIs.
-- name: CustomerOf :one
SELECT EXISTS (
    SELECT 1 FROM subscriptions s JOIN apis a ON a.id = s.api_id
    WHERE s.organization_id = @customer_id AND a.organization_id = @issuer_id
);

-- AdjustableSubscription is what an adjustment of a subscription checks:
-- who provides its API (who may adjust), who holds it, its currency.
-- name: AdjustableSubscription :one
SELECT s.organization_id AS customer_id, a.organization_id AS issuer_id, s.api_id, v.currency
FROM subscriptions s JOIN apis a ON a.id = s.api_id JOIN plan_versions v ON v.id = s.plan_version_id
WHERE s.id = $1;

-- name: MeterOfAPI :one
SELECT EXISTS (SELECT 1 FROM meters WHERE api_id = @api_id AND slug = @slug);

-- name: PlanVersionNetDays :one
SELECT net_days FROM plan_versions WHERE id = $1;

-- AdjustmentsPendingFor are the subscription's adjustments not yet
-- billed that an invoice of a period may bill: those of no period, of
-- that period or of an earlier one, in the order they were made.
-- name: AdjustmentsPendingFor :many
SELECT a.id, a.subscription_id, a.billing_period_id, a.kind, a.meter_slug, a.quantity, a.amount, a.currency, a.reason, a.actor,
    a.invoice_id, a.created_at, a.plan_version_id, a.segment_start
FROM billing_adjustments a LEFT JOIN billing_periods p ON p.id = a.billing_period_id
WHERE a.subscription_id = @subscription_id AND a.invoice_id IS NULL AND (p.id IS NULL OR p.period_start <= @period_start)
ORDER BY a.created_at, a.id;
-- InvoiceIDs are the invoices of billing periods (those billing built).
-- name: InvoiceIDs :many
SELECT id FROM invoices WHERE billing_period_id IS NOT NULL ORDER BY created_at, id;
