-- Payments of invoices, their attempts, refunds, disputes and the
-- provider events applied.

-- name: InvoiceForCollect :one
SELECT id, issuer_id, customer_id, status::text AS status, COALESCE(number, '') AS number, currency, amount_due
FROM invoices WHERE id = $1;

-- The same transition as billing's InvoiceMarkPaid, in the payment's
-- transaction; the invoice triggers decide which moves are allowed.
-- name: InvoiceMarkPaid :execrows
UPDATE invoices SET status = 'paid', paid_at = @at, updated_at = now()
WHERE id = @id AND status IN ('open', 'uncollectible');

-- name: SettingsGet :one
SELECT issuer_id, provider, retry_days, grace_days FROM payment_settings WHERE issuer_id = $1;

-- name: SettingsUpsert :exec
INSERT INTO payment_settings (issuer_id, provider, retry_days, grace_days)
VALUES (@issuer_id, @provider, @retry_days, @grace_days)
ON CONFLICT (issuer_id) DO UPDATE SET provider = EXCLUDED.provider, retry_days = EXCLUDED.retry_days,
    grace_days = EXCLUDED.grace_days, updated_at = now();

-- name: CustomerGet :one
SELECT provider_customer_id, COALESCE(default_pm_id, '') AS default_pm_id FROM payment_customers
WHERE customer_id = $1 AND provider = $2;

-- name: CustomerUpsert :exec
INSERT INTO payment_customers (customer_id, provider, provider_customer_id, default_pm_id)
VALUES (@customer_id, @provider, @provider_customer_id, sqlc.narg(default_pm_id))
ON CONFLICT (customer_id, provider) DO UPDATE SET provider_customer_id = EXCLUDED.provider_customer_id,
    default_pm_id = EXCLUDED.default_pm_id, updated_at = now();

-- name: PaymentInsert :exec
INSERT INTO payments (invoice_id, issuer_id, customer_id, provider, amount, currency)
VALUES (@invoice_id, @issuer_id, @customer_id, @provider, @amount, @currency)
ON CONFLICT (invoice_id) DO NOTHING;

-- name: PaymentLockByInvoice :one
SELECT * FROM payments WHERE invoice_id = $1 FOR UPDATE;

-- name: PaymentLock :one
SELECT * FROM payments WHERE id = $1 FOR UPDATE;

-- name: PaymentGetByInvoice :one
SELECT * FROM payments WHERE invoice_id = $1;

-- name: PaymentStartAttempt :exec
UPDATE payments SET attempts = attempts + 1, status = 'processing', next_attempt_at = NULL, updated_at = now()
WHERE id = $1;

-- name: PaymentSetStatus :exec
UPDATE payments SET status = @status, next_attempt_at = sqlc.narg(next_attempt_at),
    succeeded_at = sqlc.narg(succeeded_at), updated_at = now()
WHERE id = @id;

-- name: PaymentAddRefunded :exec
UPDATE payments SET amount_refunded = amount_refunded + @amount, updated_at = now() WHERE id = @id;

-- name: PaymentsDue :many
SELECT id FROM payments WHERE status = 'pending' AND next_attempt_at <= @now
ORDER BY next_attempt_at, id LIMIT @max;

-- name: AttemptInsert :one
INSERT INTO payment_attempts (payment_id, attempt_no, idempotency_key, provider_customer_id, payment_method_id, created_at, updated_at)
VALUES (@payment_id, @attempt_no, @idempotency_key, @provider_customer_id, @payment_method_id, @now, @now)
RETURNING *;

-- name: AttemptLock :one
SELECT * FROM payment_attempts WHERE id = $1 FOR UPDATE;

-- AttemptClaim marks an attempt as being called now, so that another
-- caller leaves it alone for a while.
-- name: AttemptClaim :exec
UPDATE payment_attempts SET updated_at = @now WHERE id = @id;

-- name: AttemptSucceededOf :one
SELECT * FROM payment_attempts WHERE payment_id = $1 AND status = 'succeeded';

-- name: AttemptOpenOf :one
SELECT * FROM payment_attempts
WHERE payment_id = $1 AND status IN ('creating', 'pending', 'processing', 'requires_action')
FOR UPDATE;

-- name: AttemptByProviderID :one
SELECT * FROM payment_attempts WHERE provider_payment_id = $1;

-- name: AttemptUpdate :exec
UPDATE payment_attempts SET status = @status, provider_payment_id = COALESCE(provider_payment_id, sqlc.narg(provider_payment_id)),
    failure_code = @failure_code, decline_code = @decline_code, failure_message = @failure_message,
    reference = @reference, finished_at = sqlc.narg(finished_at), updated_at = @now
WHERE id = @id;

-- name: AttemptsUnsettled :many
SELECT a.id, a.payment_id, a.provider_payment_id, a.created_at, a.idempotency_key, p.invoice_id, p.provider
FROM payment_attempts a JOIN payments p ON p.id = a.payment_id
WHERE a.status IN ('creating', 'processing', 'requires_action') AND a.updated_at < @before
    AND (a.check_after IS NULL OR a.check_after <= @now)
    AND p.status IN ('pending', 'processing', 'requires_action')
ORDER BY a.updated_at, a.id LIMIT @max;

-- name: AttemptsOf :many
SELECT * FROM payment_attempts WHERE payment_id = $1 ORDER BY attempt_no;

-- name: RefundInsert :one
INSERT INTO payment_refunds (id, payment_id, invoice_id, amount, currency, reason, actor, idempotency_key)
VALUES (@id, @payment_id, @invoice_id, @amount, @currency, @reason, @actor, @idempotency_key)
RETURNING *;

-- name: RefundSettle :one
UPDATE payment_refunds SET status = @status, provider_refund_id = COALESCE(provider_refund_id, sqlc.narg(provider_refund_id)),
    failure_reason = @failure_reason, updated_at = now(),
    succeeded_at = CASE WHEN @status::text = 'succeeded' THEN @at::timestamptz END
WHERE id = @id AND status = 'pending'
RETURNING *;

-- name: RefundByProviderID :one
SELECT * FROM payment_refunds WHERE provider_refund_id = $1;

-- name: RefundsGiven :one
SELECT COALESCE(sum(amount), 0)::bigint FROM payment_refunds
WHERE payment_id = $1 AND status IN ('pending', 'succeeded') AND stray_attempt_id IS NULL;

-- name: DisputeOpen :exec
INSERT INTO payment_disputes (payment_id, provider_dispute_id, amount, currency, reason, status, opened_at, closed_at)
VALUES (@payment_id, @provider_dispute_id, @amount, @currency, @reason, @status, @opened_at, sqlc.narg(closed_at))
ON CONFLICT (provider_dispute_id) DO NOTHING;

-- name: DisputeClose :exec
UPDATE payment_disputes SET status = @status, closed_at = @closed_at
WHERE provider_dispute_id = @provider_dispute_id AND closed_at IS NULL;

-- name: EventInsert :execrows
INSERT INTO provider_events (provider, event_id, type, object_id, received_at)
VALUES (@provider, @event_id, @type, @object_id, @received_at)
ON CONFLICT (provider, event_id) DO NOTHING;

-- name: PaymentGet :one
SELECT * FROM payments WHERE id = $1;

-- name: InvoiceForDunning :one
SELECT subscription_id, status::text AS status, COALESCE(number, '')::text AS number FROM invoices WHERE id = $1;

-- InvoiceNextUnpaid is the oldest other open invoice of the paid
-- invoice's subscription whose payment failed for good.
-- name: InvoiceNextUnpaid :one
SELECT i.id, i.subscription_id, COALESCE(i.number, '')::text AS number
FROM invoices i JOIN payments p ON p.invoice_id = i.id
WHERE i.subscription_id = (SELECT x.subscription_id FROM invoices x WHERE x.id = @paid)
    AND i.id <> @paid AND i.status = 'open' AND p.status = 'failed'
ORDER BY i.finalized_at, i.id LIMIT 1;

-- AttemptTouch puts an attempt reconciliation looked at or passed over at
-- the back of its queue, not to be looked at before check_after.
-- name: AttemptTouch :exec
UPDATE payment_attempts SET updated_at = @now, check_after = sqlc.narg(check_after) WHERE id = @id;

-- AttemptCancel ends an open attempt, in doubt until the provider says
-- its payment is canceled or failed (or reconciliation finds none).
-- name: AttemptCancel :exec
UPDATE payment_attempts SET status = 'canceled', failure_code = @failure_code, finished_at = @now::timestamptz, updated_at = @now::timestamptz,
    in_doubt = true
WHERE id = @id AND status IN ('creating', 'pending', 'processing', 'requires_action');

-- AttemptRecordStray records that a charge the payment did not keep
-- succeeded at the provider.
-- name: AttemptRecordStray :exec
UPDATE payment_attempts SET provider_payment_id = COALESCE(provider_payment_id, sqlc.narg(provider_payment_id)),
    late_succeeded_at = COALESCE(late_succeeded_at, @now), in_doubt = false, updated_at = @now
WHERE id = @id;

-- name: AttemptResolveDoubt :exec
UPDATE payment_attempts SET provider_payment_id = COALESCE(provider_payment_id, sqlc.narg(provider_payment_id)),
    in_doubt = false, updated_at = @now
WHERE id = @id;

-- name: AttemptsInDoubt :many
SELECT a.*, p.invoice_id, p.provider, p.amount, p.currency FROM payment_attempts a JOIN payments p ON p.id = a.payment_id
WHERE a.in_doubt AND a.updated_at < @before AND (a.check_after IS NULL OR a.check_after <= @now)
    AND (sqlc.narg(payment_id)::uuid IS NULL OR a.payment_id = sqlc.narg(payment_id))
ORDER BY a.updated_at, a.id LIMIT @max;

-- name: StrayRefundInsert :one
INSERT INTO payment_refunds (id, payment_id, invoice_id, amount, currency, reason, actor, idempotency_key, stray_attempt_id)
VALUES (@id, @payment_id, @invoice_id, @amount, @currency, @reason, 'system', @idempotency_key, @stray_attempt_id)
ON CONFLICT (stray_attempt_id) WHERE stray_attempt_id IS NOT NULL DO NOTHING
RETURNING *;

-- StrayRefundsPending lists refunds of stray charges not yet answered by
-- the provider, with the charge they give back and whether their key is
-- younger than @key_secs (the provider still answers it); least recently
-- tried first, so that one failing goes to the back of the queue.
-- name: StrayRefundsPending :many
SELECT r.id, r.payment_id, r.amount, r.currency, r.reason, r.idempotency_key, a.provider_payment_id, p.provider,
    (r.created_at > now() - make_interval(secs => @key_secs::float8))::boolean AS key_alive
FROM payment_refunds r JOIN payment_attempts a ON a.id = r.stray_attempt_id JOIN payments p ON p.id = r.payment_id
WHERE r.status = 'pending' AND r.provider_refund_id IS NULL AND a.provider_payment_id IS NOT NULL
    AND (sqlc.narg(payment_id)::uuid IS NULL OR r.payment_id = sqlc.narg(payment_id))
ORDER BY r.updated_at, r.id LIMIT @max;

-- name: PaymentSetAttention :exec
UPDATE payments SET status = 'needs_attention', attention_reason = @reason, next_attempt_at = NULL, updated_at = now()
WHERE id = @id;

-- name: PaymentFirstFailed :one
UPDATE payments SET first_failed_at = COALESCE(first_failed_at, @at), updated_at = now()
WHERE id = @id
RETURNING first_failed_at;

-- AttemptBind records the provider's id of an attempt's payment, whatever
-- its state, so that one canceled in doubt can be found at the provider.
-- name: AttemptBind :exec
UPDATE payment_attempts SET provider_payment_id = COALESCE(provider_payment_id, sqlc.narg(provider_payment_id)), updated_at = @now
WHERE id = @id;

-- AttemptMarkDoubt keeps a failed attempt's payment to be canceled at
-- the provider, so that it cannot succeed later.
-- name: AttemptMarkDoubt :exec
UPDATE payment_attempts SET in_doubt = true WHERE id = $1 AND provider_payment_id IS NOT NULL;

-- AttemptInDoubtOf is the latest attempt of a payment canceled while its
-- call may have been in flight, whose provider id is not known yet.
-- name: AttemptInDoubtOf :one
SELECT * FROM payment_attempts WHERE payment_id = $1 AND in_doubt AND provider_payment_id IS NULL
ORDER BY attempt_no DESC LIMIT 1 FOR UPDATE;

-- name: InvoiceStatusLock :one
SELECT status::text FROM invoices WHERE id = $1 FOR UPDATE;

-- InvoicesToPayNow are the open invoices of a provider's customer whose
-- payment failed, for good or until its next retry.
-- name: InvoicesToPayNow :many
SELECT p.invoice_id FROM payments p
JOIN payment_customers c ON c.customer_id = p.customer_id AND c.provider = p.provider
JOIN invoices i ON i.id = p.invoice_id
WHERE c.provider = @provider AND c.provider_customer_id = @provider_customer_id
    AND p.status IN ('failed', 'pending') AND p.attempts > 0 AND i.status = 'open'
ORDER BY i.finalized_at, i.id LIMIT 20;
