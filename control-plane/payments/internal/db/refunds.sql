-- Refunds matched to the provider's, refunds to the credit balance and
-- made outside Veil, and lost disputes.

-- name: RefundGet :one
SELECT * FROM payment_refunds WHERE id = $1;

-- RefundsUnsettled lists refunds to the payment method pending for
-- longer than @settle_secs, with the charge they give back, what the
-- call was made with, and whether its key is younger than @key_secs (the
-- provider still answers it). Times are the database's, as the refunds'
-- own. Refunds of stray charges are settled with their attempts.
-- name: RefundsUnsettled :many
SELECT r.id, r.payment_id, r.amount, r.currency, r.reason, r.idempotency_key, r.provider_refund_id,
    (r.created_at > now() - make_interval(secs => @key_secs::float8))::boolean AS key_alive,
    a.provider_payment_id, p.provider
FROM payment_refunds r JOIN payments p ON p.id = r.payment_id
    JOIN payment_attempts a ON a.payment_id = r.payment_id AND a.status = 'succeeded'
WHERE r.status = 'pending' AND r.destination = 'payment_method' AND r.stray_attempt_id IS NULL
    AND r.updated_at < now() - make_interval(secs => @settle_secs::float8)
ORDER BY r.updated_at, r.id LIMIT @max;

-- name: RefundTouch :exec
UPDATE payment_refunds SET updated_at = now() WHERE id = $1;

-- RefundInsertExternal records a refund made outside Veil, once per
-- provider refund.
-- name: RefundInsertExternal :one
INSERT INTO payment_refunds (id, payment_id, invoice_id, amount, currency, reason, actor, idempotency_key,
    provider_refund_id, status, external)
VALUES (@id, @payment_id, @invoice_id, @amount, @currency, @reason, @actor, @idempotency_key,
    @provider_refund_id, @status, true)
ON CONFLICT (provider_refund_id) DO NOTHING
RETURNING *;

-- name: RefundInsertCredit :one
INSERT INTO payment_refunds (id, payment_id, invoice_id, amount, currency, reason, actor, idempotency_key,
    status, destination)
VALUES (@id, @payment_id, @invoice_id, @amount, @currency, @reason, @actor, @idempotency_key,
    'succeeded', 'credit_balance')
RETURNING *;

-- name: RefundsOfPayment :many
SELECT * FROM payment_refunds WHERE payment_id = $1 AND stray_attempt_id IS NULL ORDER BY created_at, id;

-- name: DisputeSetStatus :exec
UPDATE payment_disputes SET status = @status WHERE provider_dispute_id = @provider_dispute_id AND closed_at IS NULL;

-- DisputeLose records a dispute lost, once.
-- name: DisputeLose :one
UPDATE payment_disputes SET status = 'lost', lost_at = @at, closed_at = COALESCE(closed_at, @at)
WHERE provider_dispute_id = @provider_dispute_id AND lost_at IS NULL
RETURNING *;

-- name: PaymentAddDisputeLost :one
UPDATE payments SET amount_disputed_lost = amount_disputed_lost + @amount, updated_at = now()
WHERE id = @id
RETURNING *;
