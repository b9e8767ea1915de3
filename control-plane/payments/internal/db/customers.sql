-- Customers at providers, their payment methods, and the lists the
-- payments cycle and its jobs work through.

-- name: InvoicesNothingDue :many
SELECT id, issuer_id FROM invoices
WHERE status = 'open' AND amount_due = 0 ORDER BY finalized_at, id LIMIT @max;

-- InvoicesToCollect lists open invoices with an amount due and no payment
-- yet, of issuers with payment settings, and whether their customer has a
-- customer at the issuer's provider. One whose collection could not start
-- waits until its collect_after, and comes after those finalized before.
-- name: InvoicesToCollect :many
SELECT i.id, i.customer_id, s.provider,
    EXISTS (SELECT 1 FROM payment_customers c WHERE c.customer_id = i.customer_id AND c.provider = s.provider) AS known
FROM invoices i JOIN payment_settings s ON s.issuer_id = i.issuer_id
    LEFT JOIN payment_collect_backoff b ON b.invoice_id = i.id
WHERE i.status = 'open' AND i.amount_due > 0
    AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id)
    AND (b.collect_after IS NULL OR b.collect_after <= @now::timestamptz)
ORDER BY COALESCE(b.collect_after, i.finalized_at), i.id LIMIT @max;

-- CollectBackoff puts off an invoice whose collection could not start:
-- to first_after (an hour from now) after the first failure, then
-- doubling the hour up to a day.
-- name: CollectBackoff :exec
INSERT INTO payment_collect_backoff AS b (invoice_id, failures, collect_after, last_error)
VALUES (@invoice_id, 1, @first_after, @last_error)
ON CONFLICT (invoice_id) DO UPDATE SET failures = b.failures + 1,
    collect_after = EXCLUDED.collect_after - interval '1 hour' + LEAST(interval '1 hour' * power(2, least(b.failures, 10)), interval '1 day'),
    last_error = EXCLUDED.last_error;

-- InvoiceToCollect reads what the collection of one invoice needs to
-- decide: its status and amount due, its issuer's provider ('' without
-- payment settings), whether its customer is known there.
-- name: InvoiceToCollect :one
SELECT i.issuer_id, i.customer_id, i.status::text AS status, i.amount_due, COALESCE(s.provider, '')::text AS provider,
    EXISTS (SELECT 1 FROM payment_customers c WHERE c.customer_id = i.customer_id AND c.provider = s.provider) AS known
FROM invoices i LEFT JOIN payment_settings s ON s.issuer_id = i.issuer_id
WHERE i.id = $1;

-- name: InvoiceMarkPaidNothingDue :execrows
UPDATE invoices SET status = 'paid', paid_at = @at, updated_at = now()
WHERE id = @id AND status = 'open' AND amount_due = 0;

-- name: OrganizationName :one
SELECT name FROM organizations WHERE id = $1;

-- name: OrganizationExists :one
SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1);

-- CustomerRequestClaim records the request that creates a customer's
-- customer at a provider: a first one, or a new key number with new
-- parameters once the last one is older than stale (the provider forgot
-- its key), or once the provider refused it. A younger one is left as it
-- is, to be sent again.
-- name: CustomerRequestClaim :exec
INSERT INTO payment_customer_requests AS r (customer_id, provider, key_no, params, created_at)
VALUES (@customer_id, @provider, 1, @params, @now)
ON CONFLICT (customer_id, provider) DO UPDATE SET key_no = r.key_no + 1, params = EXCLUDED.params,
    created_at = EXCLUDED.created_at, refused_at = NULL, refused_code = ''
WHERE r.created_at < @stale OR r.refused_at IS NOT NULL;

-- CustomerRequestRefused marks a request the provider refused for good,
-- so that the next one reads the billing profile again under a new key.
-- name: CustomerRequestRefused :exec
UPDATE payment_customer_requests SET refused_at = @at, refused_code = @code
WHERE customer_id = @customer_id AND provider = @provider AND key_no = @key_no;

-- name: CustomerRequestGet :one
SELECT key_no, params FROM payment_customer_requests WHERE customer_id = $1 AND provider = $2;

-- CustomerRecord records the customer's customer at the provider and
-- returns the one recorded: a concurrent caller's, if it came first.
-- name: CustomerRecord :one
INSERT INTO payment_customers AS c (customer_id, provider, provider_customer_id)
VALUES (@customer_id, @provider, @provider_customer_id)
ON CONFLICT (customer_id, provider) DO UPDATE SET customer_id = c.customer_id
RETURNING provider_customer_id;

-- CustomerMethodDefault makes pm the customer's default payment method,
-- unless an event newer than event_at set it. The card summary is the
-- one given, or the one kept when the method stays the same.
-- name: CustomerMethodDefault :execrows
UPDATE payment_customers SET default_pm_id = @pm_id,
    pm_brand = CASE WHEN sqlc.narg(last4)::text IS NULL AND default_pm_id = @pm_id THEN pm_brand ELSE sqlc.narg(brand) END,
    pm_last4 = CASE WHEN sqlc.narg(last4)::text IS NULL AND default_pm_id = @pm_id THEN pm_last4 ELSE sqlc.narg(last4) END,
    pm_exp_month = CASE WHEN sqlc.narg(last4)::text IS NULL AND default_pm_id = @pm_id THEN pm_exp_month ELSE sqlc.narg(exp_month) END,
    pm_exp_year = CASE WHEN sqlc.narg(last4)::text IS NULL AND default_pm_id = @pm_id THEN pm_exp_year ELSE sqlc.narg(exp_year) END,
    pm_event_at = @event_at, updated_at = now()
WHERE provider = @provider AND provider_customer_id = @provider_customer_id
    AND (pm_event_at IS NULL OR pm_event_at <= @event_at);

-- CustomerMethodCard records the card summary of the customer's default
-- method (an attached method's event carries it; it changes no default).
-- name: CustomerMethodCard :execrows
UPDATE payment_customers SET pm_brand = @brand, pm_last4 = @last4, pm_exp_month = @exp_month, pm_exp_year = @exp_year,
    updated_at = now()
WHERE provider = @provider AND provider_customer_id = @provider_customer_id AND default_pm_id = @pm_id;

-- CustomerMethodDetached forgets the customer's default method when it is
-- pm, unless an event newer than event_at set it.
-- name: CustomerMethodDetached :execrows
UPDATE payment_customers SET default_pm_id = NULL, pm_brand = NULL, pm_last4 = NULL, pm_exp_month = NULL,
    pm_exp_year = NULL, pm_event_at = @event_at, updated_at = now()
WHERE provider = @provider AND provider_customer_id = @provider_customer_id AND default_pm_id = @pm_id
    AND (pm_event_at IS NULL OR pm_event_at <= @event_at);

-- PaymentsOfClosedInvoices lists payments still open (not succeeded, not
-- canceled) of invoices no longer open: billing closed them and its word
-- to payments was lost (a crash after the commit).
-- name: PaymentsOfClosedInvoices :many
SELECT p.invoice_id, i.status::text AS status FROM payments p JOIN invoices i ON i.id = p.invoice_id
WHERE i.status IN ('paid', 'void', 'uncollectible') AND p.status NOT IN ('succeeded', 'canceled')
ORDER BY p.invoice_id LIMIT @max;

-- InvoiceSummary is an invoice as its events announce it (billing's
-- invoice summary).
-- name: InvoiceSummary :one
SELECT id, number, status::text AS status, issuer_id, customer_id, subscription_id, currency,
    period_start, period_end, total, amount_due, due_at
FROM invoices WHERE id = $1;
