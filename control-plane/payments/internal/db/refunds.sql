-- Refunds matched to the provider's, refunds to the credit balance and
-- made outside Veil, and lost disputes.

-- name: RefundGet :one
SELECT * FROM payment_refunds WHERE id = $1;

-- RefundsUnsettled lists refunds to the payment method pending for
-- longer than @settle_secs, with the charge they give back, what the
-- call was made with, and whether its key is younger than @key_secs (the
-- provider still answers it). Times are the database's, as the refunds'
-- own. Refunds of stray charges are sent with their attempts, and come
-- here once the provider answered them pending.
-- name: RefundsUnsettled :many
SELECT r.id, r.payment_id, r.amount, r.currency, r.reason, r.idempotency_key, r.provider_refund_id,
    (r.created_at > now() - make_interval(secs => @key_secs::float8))::boolean AS key_alive,
    a.provider_payment_id, p.provider
FROM payment_refunds r JOIN payments p ON p.id = r.payment_id
    JOIN payment_attempts a ON CASE WHEN r.stray_attempt_id IS NULL THEN a.payment_id = r.payment_id AND a.status = 'succeeded'
        ELSE a.id = r.stray_attempt_id END
WHERE r.status = 'pending' AND r.destination = 'payment_method'
    AND (r.stray_attempt_id IS NULL OR r.provider_refund_id IS NOT NULL)
    AND r.updated_at < now() - make_interval(secs => @settle_secs::float8)
ORDER BY r.updated_at, r.id LIMIT @max;

-- RefundTouch puts a pending refund at the back of the queue; a settled
-- one is left as it is.
-- name: RefundTouch :exec
UPDATE payment_refunds SET updated_at = now() WHERE id = $1 AND status = 'pending';

-- RefundFailAfterSucceeded records that the provider failed a refund it
-- had reported succeeded (the bank could not return the money), once.
-- name: RefundFailAfterSucceeded :one
UPDATE payment_refunds SET status = 'failed', failed_at = @at, failure_reason = @failure_reason, updated_at = now()
WHERE id = @id AND status = 'succeeded' AND destination = 'payment_method'
RETURNING *;

-- RefundsReturned sums what the provider returned of a payment's charge:
-- succeeded refunds to the payment method, and those made outside Veil
-- that are pending there.
-- name: RefundsReturned :one
SELECT COALESCE(sum(amount), 0)::bigint FROM payment_refunds
WHERE payment_id = $1 AND stray_attempt_id IS NULL AND destination = 'payment_method'
    AND (status = 'succeeded' OR (external AND status = 'pending'));

-- name: PaymentFlag :exec
UPDATE payments SET attention_reason = @reason, updated_at = now() WHERE id = @id;

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
    status, destination, succeeded_at)
VALUES (@id, @payment_id, @invoice_id, @amount, @currency, @reason, @actor, @idempotency_key,
    'succeeded', 'credit_balance', @at)
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

-- DisputeWithdrawn records, once, when the provider took an open
-- dispute's amount from the platform's balance.
-- name: DisputeWithdrawn :exec
UPDATE payment_disputes SET withdrawn_at = @at
WHERE provider_dispute_id = @provider_dispute_id AND withdrawn_at IS NULL AND closed_at IS NULL;

-- DisputeReinstated records, once, that a dispute whose amount was
-- withdrawn was won: the provider gave the amount back.
-- name: DisputeReinstated :exec
UPDATE payment_disputes SET reinstated_at = @at
WHERE provider_dispute_id = @provider_dispute_id AND withdrawn_at IS NOT NULL AND reinstated_at IS NULL;
