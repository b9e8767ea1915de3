-- +goose Up
-- Dunning: a subscription whose invoice's last payment attempt failed is
-- past_due until suspend_at (its issuer's grace), then suspended, and
-- active again as soon as the invoice is paid or written off. The row is
-- also what tells a status dunning set from one an admin set: only a
-- subscription with a row is made active again by a payment, and an
-- admin's change of its status deletes the row. The invoice's number is
-- read from the invoice, frozen once finalized.
CREATE TABLE subscription_dunning (
    subscription_id uuid PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    invoice_id      uuid NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    past_due_at     timestamptz NOT NULL,
    suspend_at      timestamptz NOT NULL,
    suspended_at    timestamptz,
    CHECK (suspend_at >= past_due_at)
);
CREATE INDEX subscription_dunning_suspend_idx ON subscription_dunning (suspend_at) WHERE suspended_at IS NULL;
CREATE INDEX subscription_dunning_invoice_idx ON subscription_dunning (invoice_id);

-- +goose Down
DROP TABLE subscription_dunning;
