-- +goose Up
-- settled_by_role: the role of whoever marked the attempt paid by hand
-- (admin: the platform confirmed the money reached its account; provider:
-- the issuer's own member did, so the money is the issuer's, not the
-- platform's); empty for an attempt the provider settled. The payouts
-- statement counts as collected only money the platform holds. Attempts
-- marked paid before this column existed take the role their audit entry
-- recorded, or 'unknown', which the statement does not count as collected.
ALTER TABLE payment_attempts ADD COLUMN settled_by_role text NOT NULL DEFAULT '' CHECK (length(settled_by_role) <= 40);
UPDATE payment_attempts a
SET settled_by_role = COALESCE((
    SELECT NULLIF(l.actor_role, '')
    FROM audit_log l
    JOIN payments p ON p.id = a.payment_id
    WHERE l.action = 'payment.succeeded' AND l.target_type = 'invoice' AND l.target_id = p.invoice_id::text
    ORDER BY l.id DESC LIMIT 1), 'unknown')
WHERE a.status = 'succeeded' AND a.provider_payment_id IS NULL;

-- +goose Down
ALTER TABLE payment_attempts DROP COLUMN settled_by_role;
