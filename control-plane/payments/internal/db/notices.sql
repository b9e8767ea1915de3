-- Payment notices: what is due is read from the payments and dunning
-- themselves; payment_notices records what was sent.

-- NoticesDue lists the notices not sent yet of events since since: failed
-- attempts and attempts waiting for the customer's action of open
-- invoices (key: the attempt), subscriptions made past_due or suspended
-- for an invoice still open (key: the subscription and when), payments
-- that need attention, to the customer and to the issuer (key: the
-- payment), disputes lost, to the issuer (key: the dispute).
-- name: NoticesDue :many
SELECT kind::text AS kind, key::text AS key, invoice_id::uuid AS invoice_id, at::timestamptz AS at FROM (
    SELECT 'attempt_failed' AS kind, a.id::text AS key, p.invoice_id, a.finished_at AS at
    FROM payment_attempts a JOIN payments p ON p.id = a.payment_id JOIN invoices i ON i.id = p.invoice_id
    WHERE a.status = 'failed' AND a.finished_at >= @since::timestamptz AND i.status = 'open' AND p.status <> 'needs_attention'
    UNION ALL
    SELECT 'requires_action', a.id::text, p.invoice_id, a.updated_at
    FROM payment_attempts a JOIN payments p ON p.id = a.payment_id JOIN invoices i ON i.id = p.invoice_id
    WHERE a.status = 'requires_action' AND a.updated_at >= @since AND i.status = 'open'
    UNION ALL
    SELECT 'past_due', d.subscription_id::text || '-' || floor(extract(epoch FROM d.past_due_at) * 1000000)::bigint::text,
        d.invoice_id, d.past_due_at
    FROM subscription_dunning d JOIN invoices i ON i.id = d.invoice_id
    WHERE d.suspended_at IS NULL AND d.past_due_at >= @since AND i.status = 'open'
    UNION ALL
    SELECT 'suspended', d.subscription_id::text || '-' || floor(extract(epoch FROM d.suspended_at) * 1000000)::bigint::text,
        d.invoice_id, d.suspended_at
    FROM subscription_dunning d JOIN invoices i ON i.id = d.invoice_id
    WHERE d.suspended_at >= @since AND i.status = 'open'
    UNION ALL
    SELECT k.kind, p.id::text, p.invoice_id, p.updated_at
    FROM payments p JOIN invoices i ON i.id = p.invoice_id
        CROSS JOIN (VALUES ('needs_attention'), ('needs_attention_issuer')) k (kind)
    WHERE p.status = 'needs_attention' AND p.updated_at >= @since AND i.status = 'open'
    UNION ALL
    SELECT 'dispute_lost_issuer', d.id::text, p.invoice_id, d.lost_at
    FROM payment_disputes d JOIN payments p ON p.id = d.payment_id
    WHERE d.lost_at >= @since
) due
WHERE NOT EXISTS (SELECT 1 FROM payment_notices n WHERE n.kind = due.kind AND n.key = due.key)
ORDER BY at, kind, key LIMIT @max;

-- name: NoticeClaim :execrows
INSERT INTO payment_notices (kind, key, invoice_id, sent_at) VALUES (@kind, @key, @invoice_id, @sent_at)
ON CONFLICT (kind, key) DO NOTHING;

-- NoticeInvoice reads what a notice tells of an invoice: its number and
-- amount, its parties' names, its payment, and the dunning of its
-- subscription when it is for this invoice.
-- name: NoticeInvoice :one
SELECT i.id, COALESCE(i.number, '')::text AS number, i.currency, i.amount_due, i.customer_id, i.issuer_id, i.status::text AS status,
    iss.name AS issuer_name, cus.name AS customer_name,
    COALESCE(p.provider, '')::text AS provider, COALESCE(p.status, '')::text AS payment_status, p.next_attempt_at,
    COALESCE(p.attention_reason, '')::text AS attention_reason,
    d.suspend_at, d.suspended_at
FROM invoices i
    JOIN organizations iss ON iss.id = i.issuer_id
    JOIN organizations cus ON cus.id = i.customer_id
    LEFT JOIN payments p ON p.invoice_id = i.id
    LEFT JOIN subscription_dunning d ON d.subscription_id = i.subscription_id AND d.invoice_id = i.id
WHERE i.id = $1;

-- name: NoticeAttempt :one
SELECT attempt_no, failure_code, decline_code, failure_message, COALESCE(finished_at, updated_at)::timestamptz AS at
FROM payment_attempts WHERE id = $1;

-- OrganizationAdminEmails lists the emails of an organization's admins,
-- whom a notice goes to when it has no billing email; users.invalid
-- placeholders of users without an address are no one's.
-- name: OrganizationAdminEmails :many
SELECT DISTINCT u.email FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.organization_id = $1 AND m.role = 'admin' AND u.email <> '' AND u.email NOT LIKE '%.invalid'
ORDER BY u.email LIMIT 20;

-- InvoicePaidAt reads whether an invoice is paid, and when.
-- name: InvoicePaidAt :one
SELECT status::text AS status, paid_at FROM invoices WHERE id = $1;
