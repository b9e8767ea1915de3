-- +goose Up
-- Where a refund goes: back through the provider to the payment method,
-- or to the customer's credit balance with the issuer (a 'refund' entry
-- of the credit ledger, written in the same transaction, with no provider
-- call). Both count against what was paid (payment_refunds_within_paid).
ALTER TABLE payment_refunds
    ADD COLUMN destination text NOT NULL DEFAULT 'payment_method'
        CHECK (destination IN ('payment_method', 'credit_balance'));
-- A refund made outside Veil (the provider's dashboard) is recorded from
-- the provider's event or listing; Veil's refunds carry their id to the
-- provider, so one without it is such a refund.
ALTER TABLE payment_refunds
    ADD COLUMN external boolean NOT NULL DEFAULT false,
    ADD CHECK (NOT (external AND destination = 'credit_balance'));

-- What lost disputes took back from a payment: money the issuer no longer
-- has, which its payouts subtract. A dispute counts once, when it closes
-- lost (lost_at).
ALTER TABLE payments
    ADD COLUMN amount_disputed_lost bigint NOT NULL DEFAULT 0 CHECK (amount_disputed_lost >= 0);
ALTER TABLE payments ADD CHECK (amount_disputed_lost <= amount);
ALTER TABLE payment_disputes ADD COLUMN lost_at timestamptz;

-- +goose Down
ALTER TABLE payment_disputes DROP COLUMN lost_at;
ALTER TABLE payments DROP COLUMN amount_disputed_lost;
ALTER TABLE payment_refunds DROP COLUMN external;
ALTER TABLE payment_refunds DROP COLUMN destination;
