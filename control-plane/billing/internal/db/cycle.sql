-- The billing cycle's set-based reads and writes: a batch of periods is
-- read, invoiced and finalized in a few statements rather than a few per
-- invoice.

-- PeriodsToInvoiceWith is PeriodsToInvoice with each period's issuer and
-- customer, after a period (the cycle reads the next batch while it
-- writes one).
-- name: PeriodsToInvoiceWith :many
SELECT p.id, p.subscription_id, p.period_start, p.period_end, s.organization_id AS customer_id, a.organization_id AS issuer_id
FROM billing_periods p
JOIN subscriptions s ON s.id = p.subscription_id
JOIN apis a ON a.id = s.api_id
WHERE p.state = 'closed' AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.billing_period_id = p.id)
  AND (p.period_end, p.id) > (@after_end::timestamptz, @after_id::uuid)
ORDER BY p.period_end, p.id
LIMIT @max;

-- DraftsToFinalizeWith is DraftsToFinalize with each draft's period,
-- after a draft.
-- name: DraftsToFinalizeWith :many
SELECT i.id AS invoice_id, i.billing_period_id, i.subscription_id, i.period_start, i.period_end, i.customer_id, i.issuer_id
FROM invoices i
WHERE i.status = 'draft' AND i.created_at <= @built_before AND i.billing_period_id IS NOT NULL
  AND (i.period_end, i.id) > (@after_end::timestamptz, @after_id::uuid)
ORDER BY i.period_end, i.id
LIMIT @max;

-- PeriodsForSegments are what the segments of periods derive from: each
-- one's bounds, its subscription's trial end and cancellation, and its
-- snapshot (none while open).
-- name: PeriodsForSegments :many
SELECT b.id, b.subscription_id, b.period_start, b.period_end, b.trial, s.trial_ends_at, s.canceled_at, u.id AS snapshot_id
FROM billing_periods b
JOIN subscriptions s ON s.id = b.subscription_id
LEFT JOIN usage_snapshots u ON u.billing_period_id = b.id
WHERE b.id = ANY(@period_ids::uuid[]);

-- PeriodsNotInvoiced are the periods of subscriptions not invoiced yet
-- (the earlier-draft rule reads them).
-- name: PeriodsNotInvoiced :many
SELECT subscription_id, period_start FROM billing_periods
WHERE subscription_id = ANY(@subscription_ids::uuid[]) AND state <> 'invoiced';

-- RedemptionsOfSubscriptions are the redemptions of subscriptions with
-- their promotions' terms, in the order they were redeemed; the reader
-- keeps those of a period as RedemptionsForPeriod does.
-- name: RedemptionsOfSubscriptions :many
SELECT r.subscription_id, r.redeemed_at, r.ended_at, r.id, r.promotion_id, r.periods_applied, p.code, p.kind::text AS kind, p.value,
    p.currency, p.meter, p.duration::text AS duration, p.duration_periods, p.priority, p.stackable
FROM promotion_redemptions r JOIN promotions p ON p.id = r.promotion_id
WHERE r.subscription_id = ANY(@subscription_ids::uuid[])
ORDER BY r.subscription_id, r.redeemed_at, r.id;

-- name: BillingProfilesOf :many
SELECT organization_id, legal_name, address_line1, address_line2, city, postal_code, country, region, tax_id, email, updated_at
FROM billing_profiles WHERE organization_id = ANY(@organization_ids::uuid[]);

-- name: CreditBalancesEnsureMany :exec
INSERT INTO credit_balances (issuer_id, customer_id, currency)
SELECT @issuer_id::uuid, unnest(@customer_ids::uuid[]), unnest(@currencies::text[])
ON CONFLICT DO NOTHING;

-- CreditBalancesLockMany locks an issuer's balances of customers, in one
-- order, so that two batches cannot each wait for the other.
-- name: CreditBalancesLockMany :many
SELECT customer_id, currency, balance FROM credit_balances
WHERE issuer_id = @issuer_id AND customer_id = ANY(@customer_ids::uuid[])
ORDER BY customer_id, currency
FOR UPDATE;

-- name: CreditBalancesOf :many
SELECT customer_id, currency, balance FROM credit_balances
WHERE issuer_id = @issuer_id AND customer_id = ANY(@customer_ids::uuid[]);

-- name: CreditBalancesSetMany :exec
UPDATE credit_balances b SET balance = u.balance
FROM (SELECT unnest(@customer_ids::uuid[]) AS customer_id, unnest(@currencies::text[]) AS currency,
    unnest(@balances::numeric[]) AS balance) u
WHERE b.issuer_id = @issuer_id AND b.customer_id = u.customer_id AND b.currency = u.currency;

-- name: CreditLedgerInsertMany :copyfrom
INSERT INTO credit_ledger (issuer_id, customer_id, currency, kind, amount, balance_after, invoice_id, reason, actor)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- InvoiceDraftsInsert creates the drafts of periods with their amounts;
-- a period that has one already gets none (billing_period_id is unique).
-- name: InvoiceDraftsInsert :many
INSERT INTO invoices (issuer_id, customer_id, subscription_id, billing_period_id, currency, period_start, period_end, net_days,
    subtotal, discount, tax, credit_applied, total, amount_due, cites, created_at, updated_at)
SELECT @issuer_id::uuid, unnest(@customer_ids::uuid[]), unnest(@subscription_ids::uuid[]), unnest(@period_ids::uuid[]),
    unnest(@currencies::text[]), unnest(@period_starts::timestamptz[]), unnest(@period_ends::timestamptz[]), unnest(@net_days::int[]),
    unnest(@subtotals::numeric[]), unnest(@discounts::numeric[]), unnest(@taxes::numeric[]), unnest(@credits_applied::numeric[]),
    unnest(@totals::numeric[]), unnest(@amounts_due::numeric[]), unnest(@cites::jsonb[]), @created_at::timestamptz, @created_at::timestamptz
ON CONFLICT (billing_period_id) DO NOTHING
RETURNING id, billing_period_id;

-- InvoiceDraftsLock locks drafts, in one order, and returns those that
-- are still drafts.
-- name: InvoiceDraftsLock :many
SELECT id FROM invoices WHERE id = ANY(@ids::uuid[]) AND status = 'draft' ORDER BY id FOR UPDATE;

-- name: InvoiceDraftsUpdate :execrows
UPDATE invoices i SET currency = u.currency, subtotal = u.subtotal, discount = u.discount, tax = u.tax,
    credit_applied = u.credit_applied, total = u.total, amount_due = u.amount_due, net_days = u.net_days, cites = u.cites,
    updated_at = now()
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@currencies::text[]) AS currency, unnest(@subtotals::numeric[]) AS subtotal,
    unnest(@discounts::numeric[]) AS discount, unnest(@taxes::numeric[]) AS tax, unnest(@credits_applied::numeric[]) AS credit_applied,
    unnest(@totals::numeric[]) AS total, unnest(@amounts_due::numeric[]) AS amount_due, unnest(@net_days::int[]) AS net_days,
    unnest(@cites::jsonb[]) AS cites) u
WHERE i.id = u.id AND i.status = 'draft';

-- name: InvoiceLinesDeleteMany :exec
DELETE FROM invoice_lines WHERE invoice_id = ANY(@invoice_ids::uuid[]);

-- name: InvoiceLinesCopy :copyfrom
INSERT INTO invoice_lines (invoice_id, position, kind, description, plan_version_id, meter_slug, tier, quantity, unit_price, amount, reference)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- InvoiceNumbersTake takes an issuer's next n numbers of the year at
-- once, under the row lock InvoiceNumberNext takes; it returns the last.
-- name: InvoiceNumbersTake :one
INSERT INTO invoice_number_sequences (issuer_id, year, last) VALUES (@issuer_id, @year, @n::bigint)
ON CONFLICT (issuer_id, year) DO UPDATE SET last = invoice_number_sequences.last + @n::bigint
RETURNING last;

-- name: InvoicesFinalizeMany :execrows
UPDATE invoices i SET status = 'open', number = u.number, finalized_at = @finalized_at, due_at = u.due_at, updated_at = now()
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@numbers::text[]) AS number, unnest(@due_ats::timestamptz[]) AS due_at) u
WHERE i.id = u.id AND i.status = 'draft';

-- RedemptionsAppliedMany counts one more period of redemptions, each
-- only while its periods_applied is still the one the invoices were
-- computed with; the caller checks that it counted all of them.
-- name: RedemptionsAppliedMany :execrows
UPDATE promotion_redemptions r SET periods_applied = r.periods_applied + 1
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@applied::int[]) AS applied) u
WHERE r.id = u.id AND r.periods_applied = u.applied;

-- SetPeriodsChanged are those of a set's periods that changed since the
-- set was read: a period no longer closed, or whose invoice is no longer
-- the draft listed with it (uuid nil: none).
-- name: SetPeriodsChanged :many
SELECT p.id
FROM (SELECT unnest(@period_ids::uuid[]) AS period_id, unnest(@invoice_ids::uuid[]) AS invoice_id) u
JOIN billing_periods p ON p.id = u.period_id
WHERE p.state <> 'closed'
   OR EXISTS (SELECT 1 FROM invoices i WHERE i.billing_period_id = u.period_id AND (i.id <> u.invoice_id OR i.status <> 'draft'));

-- name: AdjustmentsBilledOf :many
SELECT id FROM billing_adjustments WHERE id = ANY(@ids::uuid[]) AND invoice_id IS NOT NULL;

-- name: RedemptionsAppliedOf :many
SELECT id, periods_applied FROM promotion_redemptions WHERE id = ANY(@ids::uuid[]);

-- AdjustmentQuantityOfPeriod is the quantity of a meter that a period's
-- adjustments billed on invoices not voided add to it, whichever segment
-- they concern: what an adjustment of the period is priced on top of,
-- with the usage of all its segments.
-- name: AdjustmentQuantityOfPeriod :one
SELECT COALESCE(sum(a.quantity), 0)::numeric
FROM billing_adjustments a JOIN invoices i ON i.id = a.invoice_id
WHERE a.billing_period_id = @billing_period_id AND a.meter_slug = @meter_slug AND i.status <> 'void';

-- name: BillingPeriodsMarkInvoiced :execrows
UPDATE billing_periods SET state = 'invoiced' WHERE id = ANY(@ids::uuid[]) AND state = 'closed';

-- AdjustmentsPendingOf are the adjustments of subscriptions not billed
-- yet, with the start of the period each concerns (null: none), in the
-- order they were made; the reader keeps those of an invoice as
-- AdjustmentsPendingFor does.
-- name: AdjustmentsPendingOf :many
SELECT a.id, a.subscription_id, a.billing_period_id, a.kind, a.meter_slug, a.quantity, a.amount, a.currency, a.reason, a.actor,
    a.invoice_id, a.created_at, a.plan_version_id, a.segment_start, p.period_start AS concerns_start
FROM billing_adjustments a LEFT JOIN billing_periods p ON p.id = a.billing_period_id
WHERE a.subscription_id = ANY(@subscription_ids::uuid[]) AND a.invoice_id IS NULL
ORDER BY a.created_at, a.id;

-- name: AdjustmentsMarkBilledMany :execrows
UPDATE billing_adjustments a SET invoice_id = u.invoice_id
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@invoice_ids::uuid[]) AS invoice_id) u
WHERE a.id = u.id AND a.invoice_id IS NULL;
