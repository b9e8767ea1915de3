-- Dunning of subscriptions whose invoices are not paid (00020).

-- DunningUpsert starts a subscription's dunning; a row left from an
-- earlier one is replaced.
-- name: DunningUpsert :exec
INSERT INTO subscription_dunning (subscription_id, invoice_id, past_due_at, suspend_at)
VALUES (@subscription_id, @invoice_id, @past_due_at, @suspend_at)
ON CONFLICT (subscription_id) DO UPDATE SET invoice_id = EXCLUDED.invoice_id, past_due_at = EXCLUDED.past_due_at,
    suspend_at = EXCLUDED.suspend_at, suspended_at = NULL;

-- DunningGet reads a subscription's dunning with its invoice's number and
-- status.
-- name: DunningGet :one
SELECT d.subscription_id, d.invoice_id, COALESCE(i.number, '')::text AS invoice_number, i.status::text AS invoice_status,
    d.past_due_at, d.suspend_at, d.suspended_at, d.dispute_lost
FROM subscription_dunning d JOIN invoices i ON i.id = d.invoice_id
WHERE d.subscription_id = $1;

-- name: DunningOfInvoice :many
SELECT subscription_id FROM subscription_dunning WHERE invoice_id = $1 ORDER BY subscription_id;

-- name: DunningDelete :execrows
DELETE FROM subscription_dunning WHERE subscription_id = $1;

-- name: DunningMarkSuspended :exec
UPDATE subscription_dunning SET suspended_at = @at WHERE subscription_id = @subscription_id;

-- DunningDue lists the past_due subscriptions whose grace ended by now.
-- name: DunningDue :many
SELECT d.subscription_id FROM subscription_dunning d JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.suspended_at IS NULL AND d.suspend_at <= @now AND s.status = 'past_due'
ORDER BY d.suspend_at, d.subscription_id LIMIT @max;

-- DunningSettled lists the subscriptions dunned for an invoice that is no
-- longer open: paid, written off or voided in billing rather than by a
-- payment.
-- name: DunningSettled :many
SELECT d.subscription_id FROM subscription_dunning d JOIN invoices i ON i.id = d.invoice_id
WHERE i.status <> 'open' AND NOT d.dispute_lost ORDER BY d.subscription_id LIMIT @max;

-- DunningDisputeLost dunns a subscription for a lost dispute of a payment
-- of its invoice, replacing any dunning it had and keeping the earlier
-- suspension date.
-- name: DunningDisputeLost :exec
INSERT INTO subscription_dunning AS d (subscription_id, invoice_id, past_due_at, suspend_at, dispute_lost)
VALUES (@subscription_id, @invoice_id, @past_due_at, @suspend_at, true)
ON CONFLICT (subscription_id) DO UPDATE SET invoice_id = EXCLUDED.invoice_id, dispute_lost = true,
    suspend_at = LEAST(d.suspend_at, EXCLUDED.suspend_at);

-- DunningNextUnpaid is the oldest open invoice of the subscription other
-- than settled whose payment failed for good (or that its provider can
-- never take, unless only for being too small), with the grace days of
-- its issuer's payment settings (3, payments' default, without them) and
-- when its payment failed (its last attempt's end), from which that grace
-- runs.
-- name: DunningNextUnpaid :one
SELECT i.id, COALESCE(i.number, '')::text AS number, COALESCE(st.grace_days, 3)::integer AS grace_days,
    COALESCE((SELECT max(a.finished_at) FROM payment_attempts a WHERE a.payment_id = p.id), p.updated_at)::timestamptz AS failed_at
FROM invoices i JOIN payments p ON p.invoice_id = i.id
    LEFT JOIN payment_settings st ON st.issuer_id = i.issuer_id
WHERE i.subscription_id = @subscription_id AND i.id <> @settled AND i.status = 'open'
    AND (p.status = 'failed' OR p.status = 'needs_attention' AND p.attention_reason NOT LIKE 'amount\_too\_small%')
ORDER BY i.finalized_at, i.id LIMIT 1;
