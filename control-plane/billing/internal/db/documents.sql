-- Documents and notices: the invoice list the REST API pages through, and
-- the invoices whose emails (the finalized invoice, its reminders) are due.

-- InvoiceList pages through the invoices an organization issued or
-- received (every one for an admin), oldest first, filtered by status,
-- subscription and the period's start (from inclusive, to exclusive).
-- name: InvoiceList :many
SELECT id, issuer_id, customer_id, subscription_id, billing_period_id, status, number, currency, period_start, period_end,
    subtotal, discount, tax, credit_applied, total, amount_due, net_days, cites, finalized_at, due_at, paid_at, voided_at,
    overdue_at, created_at, updated_at
FROM invoices
WHERE (@every::boolean OR issuer_id = @org_id OR customer_id = @org_id)
  AND (sqlc.narg(status)::invoice_status IS NULL OR status = sqlc.narg(status)::invoice_status)
  AND (sqlc.narg(subscription_id)::uuid IS NULL OR subscription_id = sqlc.narg(subscription_id))
  AND (sqlc.narg(period_from)::timestamptz IS NULL OR period_start >= sqlc.narg(period_from))
  AND (sqlc.narg(period_to)::timestamptz IS NULL OR period_start < sqlc.narg(period_to))
  AND (sqlc.narg(after_at)::timestamptz IS NULL OR (created_at, id) > (sqlc.narg(after_at), @after_id::uuid))
ORDER BY created_at, id LIMIT @row_limit;

-- NoticesDue are finalized invoices with a notice of kind due at now that
-- was not sent: the finalized invoice to an open or paid one finalized
-- since finalized_since (not to invoices from long before); the
-- reminders to open ones with an amount due, each in its own window
-- (due_soon from 3 days before the due date, due from it, overdue from 7
-- to 14 days after), a reminder whose window has passed never sent late.
-- name: NoticesDue :many
SELECT i.id, k.kind::invoice_notice_kind AS kind
FROM invoices i, unnest(ARRAY['finalized', 'due_soon', 'due', 'overdue']::invoice_notice_kind[]) AS k (kind)
WHERE i.status IN ('open', 'paid')
  AND CASE k.kind
    WHEN 'finalized' THEN i.finalized_at >= @finalized_since::timestamptz
    WHEN 'due_soon' THEN i.status = 'open' AND i.amount_due > 0 AND @now::timestamptz >= i.due_at - interval '3 days' AND @now::timestamptz < i.due_at
    WHEN 'due' THEN i.status = 'open' AND i.amount_due > 0 AND @now::timestamptz >= i.due_at AND @now::timestamptz < i.due_at + interval '7 days'
    ELSE i.status = 'open' AND i.amount_due > 0 AND @now::timestamptz >= i.due_at + interval '7 days' AND @now::timestamptz < i.due_at + interval '14 days'
  END
  AND NOT EXISTS (SELECT 1 FROM invoice_notices n WHERE n.invoice_id = i.id AND n.kind = k.kind)
ORDER BY i.finalized_at, i.id, k.kind
LIMIT @row_limit;

-- NoticeClaim records a notice as sent, inside the transaction that sends
-- it: a second sender waits on the row and then finds it taken (no row).
-- name: NoticeClaim :one
INSERT INTO invoice_notices (invoice_id, kind, sent_at) VALUES (@invoice_id, @kind, @sent_at)
ON CONFLICT (invoice_id, kind) DO NOTHING
RETURNING invoice_id;

-- name: NoticeList :many
SELECT kind, sent_at FROM invoice_notices WHERE invoice_id = $1 ORDER BY sent_at, kind;

-- name: OrganizationName :one
SELECT name FROM organizations WHERE id = $1;

-- PreviewSubscription is what the preview of a subscription's current
-- period needs: its parties and the period's bounds.
-- name: PreviewSubscription :one
SELECT s.id, s.organization_id AS customer_id, a.organization_id AS issuer_id, s.current_period_start, s.current_period_end,
    s.trial_ends_at, s.canceled_at, v.net_days
FROM subscriptions s
JOIN apis a ON a.id = s.api_id
JOIN plan_versions v ON v.id = s.plan_version_id
WHERE s.id = $1;

-- CreditBalancesOfParty are the balances an organization is a party to,
-- as issuer or as customer (a provider's organization may be both), with
-- the optional filters of CreditBalances.
-- name: CreditBalancesOfParty :many
SELECT issuer_id, customer_id, currency, balance FROM credit_balances
WHERE (issuer_id = @org_id OR customer_id = @org_id)
  AND (@issuer_id::uuid = '00000000-0000-0000-0000-000000000000' OR issuer_id = @issuer_id)
  AND (@customer_id::uuid = '00000000-0000-0000-0000-000000000000' OR customer_id = @customer_id)
ORDER BY issuer_id, customer_id, currency;

-- PeriodOfSubscriptionLock is the state of a subscription's billing
-- period, its row locked until the transaction ends: a negative
-- correction of the period sums its adjustments under this lock, so two
-- at once cannot both pass the below-zero check.
-- name: PeriodOfSubscriptionLock :one
SELECT state FROM billing_periods WHERE id = @id AND subscription_id = @subscription_id FOR UPDATE;
