-- +goose Up
-- The emails payments sends a customer, each once: a failed attempt, a
-- payment that needs the customer's action (key: the attempt), a
-- subscription made past_due or suspended for an unpaid invoice (key: the
-- subscription and the time it happened). A notice is claimed, sent and
-- its claim committed in one transaction, so a failed send is tried again
-- and a sent one never twice (a crash after the send resends it with the
-- same Message-ID, which mail clients drop).
CREATE TABLE payment_notices (
    kind       text NOT NULL CHECK (kind IN ('attempt_failed', 'requires_action', 'past_due', 'suspended')),
    key        text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    sent_at    timestamptz NOT NULL,
    PRIMARY KEY (kind, key)
);

-- +goose Down
DROP TABLE payment_notices;
