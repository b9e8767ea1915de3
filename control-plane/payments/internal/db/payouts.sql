-- The payouts statement: what an issuer's payments collected, refunded
-- and lost to disputes over [from_time, to_time), each item with what
-- cites it, and the platform fee percent billing keeps.

-- name: PayoutOrganizationExists :one
SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1);

-- Billing's setting, its default (0) when the issuer has none: the
-- percent the revenue statement takes too.
-- name: PayoutFeePercent :one
SELECT COALESCE((SELECT platform_fee_percent FROM issuer_settings WHERE organization_id = $1), 0)::numeric AS platform_fee_percent;

-- Payments that succeeded in the window, with their invoice's total and
-- tax, which the fee's base is taken from. The attempt that settled each
-- tells who holds the money: the provider's (a charge) or one a platform
-- admin marked paid by hand went to the platform; one the issuer's own
-- member marked paid by hand went to the issuer (settled_by_role).
-- name: PayoutPayments :many
SELECT p.id, p.invoice_id, COALESCE(i.number, '')::text AS invoice_number,
       (CASE WHEN a.id IS NOT NULL AND a.provider_payment_id IS NULL THEN 'manual' ELSE p.provider END)::text AS provider,
       p.amount, p.currency, p.succeeded_at::timestamptz AS succeeded_at, i.total AS invoice_total, i.tax AS invoice_tax,
       (NOT COALESCE(a.provider_payment_id IS NULL AND a.settled_by_role NOT IN ('admin', 'system'), false))::boolean AS paid_to_platform
FROM payments p
JOIN invoices i ON i.id = p.invoice_id
LEFT JOIN payment_attempts a ON a.payment_id = p.id AND a.status = 'succeeded'
WHERE p.issuer_id = @issuer_id AND p.status = 'succeeded'
  AND p.succeeded_at >= @from_time::timestamptz AND p.succeeded_at < @to_time::timestamptz
ORDER BY p.succeeded_at, p.id;

-- Refunds that succeeded in the window (succeeded_at, written once by
-- the service clock), and, negated, refunds through the provider that it
-- failed in the window after they had succeeded (failed_at: the money
-- came back to the platform), so that a month once stated never changes.
-- destination tells money given back through the provider
-- (payment_method, made in Veil or outside it) from credit given with
-- the issuer (credit_balance), which moves no money. The refund of a
-- stray charge (one the payment did not keep) is left out, as its charge
-- is: together they moved nothing.
-- name: PayoutRefunds :many
SELECT r.id, r.payment_id, r.invoice_id, COALESCE(i.number, '')::text AS invoice_number, p.provider, r.destination, r.external,
       COALESCE(r.provider_refund_id, '')::text AS provider_refund_id, r.amount, r.currency, r.succeeded_at::timestamptz AS refunded_at
FROM payment_refunds r
JOIN payments p ON p.id = r.payment_id
JOIN invoices i ON i.id = r.invoice_id
WHERE p.issuer_id = @issuer_id AND r.stray_attempt_id IS NULL
  AND r.succeeded_at >= @from_time::timestamptz AND r.succeeded_at < @to_time::timestamptz
UNION ALL
SELECT r.id, r.payment_id, r.invoice_id, COALESCE(i.number, '')::text, p.provider, r.destination, r.external,
       COALESCE(r.provider_refund_id, '')::text, -r.amount, r.currency, r.failed_at::timestamptz
FROM payment_refunds r
JOIN payments p ON p.id = r.payment_id
JOIN invoices i ON i.id = r.invoice_id
WHERE p.issuer_id = @issuer_id AND r.stray_attempt_id IS NULL
  AND r.failed_at >= @from_time::timestamptz AND r.failed_at < @to_time::timestamptz
ORDER BY refunded_at, id;

-- Disputes counted in the window. A chargeback counts when the provider
-- withdrew its amount (withdrawn_at) and, negated, when it was won and
-- the amount came back (reinstated_at); a lost one then counts nothing
-- more. A dispute recorded before withdrawals were (withdrawn_at unset)
-- counts when it closed lost (lost_at, once per dispute): the dispute's
-- amount up to what the payment's earlier lost disputes left, as
-- payments.amount_disputed_lost counts it.
-- name: PayoutDisputesLost :many
SELECT l.id, l.provider_dispute_id, l.payment_id, l.invoice_id, l.invoice_number, l.provider, l.taken::bigint AS amount,
       l.currency, l.reason, l.lost_at
FROM (
    SELECT d.id, d.provider_dispute_id, d.payment_id, p.invoice_id, COALESCE(i.number, '')::text AS invoice_number, p.provider,
           p.currency, d.reason, d.lost_at::timestamptz AS lost_at,
           GREATEST(0, LEAST(d.amount, p.amount - COALESCE(sum(d.amount) OVER (PARTITION BY d.payment_id ORDER BY d.lost_at, d.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS taken
    FROM payment_disputes d
    JOIN payments p ON p.id = d.payment_id
    JOIN invoices i ON i.id = p.invoice_id
    WHERE p.issuer_id = @issuer_id AND d.lost_at IS NOT NULL AND d.lost_at < @to_time::timestamptz AND d.withdrawn_at IS NULL
) l
WHERE l.lost_at >= @from_time::timestamptz
UNION ALL
SELECT d.id, d.provider_dispute_id, d.payment_id, p.invoice_id, COALESCE(i.number, '')::text, p.provider, d.amount,
       p.currency, d.reason, d.withdrawn_at::timestamptz
FROM payment_disputes d
JOIN payments p ON p.id = d.payment_id
JOIN invoices i ON i.id = p.invoice_id
WHERE p.issuer_id = @issuer_id AND d.withdrawn_at >= @from_time::timestamptz AND d.withdrawn_at < @to_time::timestamptz
UNION ALL
SELECT d.id, d.provider_dispute_id, d.payment_id, p.invoice_id, COALESCE(i.number, '')::text, p.provider, -d.amount,
       p.currency, d.reason, d.reinstated_at::timestamptz
FROM payment_disputes d
JOIN payments p ON p.id = d.payment_id
JOIN invoices i ON i.id = p.invoice_id
WHERE p.issuer_id = @issuer_id AND d.reinstated_at >= @from_time::timestamptz AND d.reinstated_at < @to_time::timestamptz
ORDER BY lost_at, id;

-- Who marked an attempt paid by hand, by role, which the statement reads
-- to tell money the platform holds from money the issuer received.
-- name: AttemptSettledBy :exec
UPDATE payment_attempts SET settled_by_role = @role WHERE id = @id;
