-- +goose Up
-- pm_event_at: the provider's time of the event that last set or cleared
-- the customer's default payment method; an event older than it arrives
-- late and changes nothing.
ALTER TABLE payment_customers ADD COLUMN pm_event_at timestamptz;

-- The request that creates a customer's customer at a provider, committed
-- before the call: its idempotency key ("veil-cus-<customer>-<key_no>")
-- and its parameters, so that a repeated call within the provider's key
-- lifetime sends the same key with the same parameters (one customer at
-- the provider, never an idempotency error), and one after it a new key.
CREATE TABLE payment_customer_requests (
    customer_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider    text NOT NULL CHECK (provider IN ('stripe', 'manual')),
    key_no      integer NOT NULL CHECK (key_no >= 1),
    params      jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, provider)
);

-- +goose Down
DROP TABLE payment_customer_requests;
ALTER TABLE payment_customers DROP COLUMN pm_event_at;
