-- +goose Up
-- Payments collect finalized invoices through a payment provider. A
-- finalized invoice's columns are frozen (00017), so a payment's state is
-- kept here, beside it; the invoice only becomes paid. Amounts are integer
-- minor units of the invoice's currency (metering.MinorUnits), as
-- providers take them.

-- How an issuer collects: its provider, the days after a failed attempt
-- at which the next one is made (the payment fails for good after the
-- last), and the grace before a past-due subscription is suspended.
CREATE TABLE payment_settings (
    issuer_id  uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    provider   text NOT NULL CHECK (provider IN ('stripe', 'manual')),
    retry_days integer[] NOT NULL DEFAULT '{1,3,5,7}'
        CHECK (cardinality(retry_days) <= 20 AND 1 <= ALL (retry_days) AND 365 >= ALL (retry_days)),
    grace_days integer NOT NULL DEFAULT 3 CHECK (grace_days BETWEEN 0 AND 90),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A customer at a provider, and its default payment method: only the
-- provider's id of it and what identifies it to a person, never card data.
CREATE TABLE payment_customers (
    customer_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    provider             text NOT NULL CHECK (provider IN ('stripe', 'manual')),
    provider_customer_id text NOT NULL CHECK (provider_customer_id <> '' AND length(provider_customer_id) <= 255),
    default_pm_id        text CHECK (length(default_pm_id) <= 255),
    pm_brand             text CHECK (length(pm_brand) <= 32),
    pm_last4             text CHECK (pm_last4 ~ '^[0-9]{4}$'),
    pm_exp_month         integer CHECK (pm_exp_month BETWEEN 1 AND 12),
    pm_exp_year          integer CHECK (pm_exp_year BETWEEN 2000 AND 2200),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, provider),
    UNIQUE (provider, provider_customer_id)
);

-- One payment per invoice, however many attempts it takes. status:
-- pending (waiting: a transfer, or the next attempt at next_attempt_at),
-- processing, requires_action, succeeded, failed (the last attempt
-- failed), canceled (the invoice was voided).
CREATE TABLE payments (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id      uuid NOT NULL UNIQUE REFERENCES invoices (id) ON DELETE RESTRICT,
    issuer_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    customer_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    provider        text NOT NULL CHECK (provider IN ('stripe', 'manual')),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'requires_action', 'succeeded', 'failed', 'canceled')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    succeeded_at    timestamptz,
    amount_refunded bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0 AND amount_refunded <= amount),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'succeeded') = (succeeded_at IS NOT NULL)),
    CHECK (amount_refunded = 0 OR status = 'succeeded'),
    CHECK (next_attempt_at IS NULL OR status = 'pending')
);
CREATE INDEX payments_due_idx ON payments (next_attempt_at) WHERE status = 'pending' AND next_attempt_at IS NOT NULL;

-- An attempt is committed with its idempotency key before the provider
-- is called, so that a crash or a timeout repeats the same call rather
-- than charging again. At most one attempt of a payment is under way and
-- at most one succeeds: a second charge cannot even be recorded.
-- provider_customer_id and payment_method_id are what the call was made
-- with, so that a repeated call sends the same parameters.
CREATE TABLE payment_attempts (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_id           uuid NOT NULL REFERENCES payments (id) ON DELETE RESTRICT,
    attempt_no           integer NOT NULL CHECK (attempt_no > 0),
    idempotency_key      text NOT NULL UNIQUE CHECK (idempotency_key ~ '^[!-~]{1,255}$'),
    provider_payment_id  text UNIQUE CHECK (provider_payment_id <> ''),
    provider_customer_id text NOT NULL,
    payment_method_id    text NOT NULL DEFAULT '',
    status               text NOT NULL DEFAULT 'creating'
        CHECK (status IN ('creating', 'pending', 'processing', 'requires_action', 'succeeded', 'failed', 'canceled')),
    failure_code         text NOT NULL DEFAULT '',
    decline_code         text NOT NULL DEFAULT '',
    failure_message      text NOT NULL DEFAULT '' CHECK (length(failure_message) <= 1000),
    -- What a person who marked it paid by hand gave as proof (a bank
    -- transfer's reference).
    reference            text NOT NULL DEFAULT '' CHECK (length(reference) <= 200),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz,
    UNIQUE (payment_id, attempt_no),
    CHECK ((status IN ('succeeded', 'failed', 'canceled')) = (finished_at IS NOT NULL))
);
CREATE UNIQUE INDEX payment_attempts_one_open ON payment_attempts (payment_id)
    WHERE status IN ('creating', 'pending', 'processing', 'requires_action');
CREATE UNIQUE INDEX payment_attempts_one_succeeded ON payment_attempts (payment_id) WHERE status = 'succeeded';
CREATE INDEX payment_attempts_unsettled_idx ON payment_attempts (updated_at)
    WHERE status IN ('creating', 'processing', 'requires_action');

-- A refund of a succeeded payment, all or part of it. A pending refund
-- counts as given back already, so that two refunds at once cannot
-- together exceed what was paid (payment_refunds_within_paid).
CREATE TABLE payment_refunds (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_id         uuid NOT NULL REFERENCES payments (id) ON DELETE RESTRICT,
    invoice_id         uuid NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    amount             bigint NOT NULL CHECK (amount > 0),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reason             text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    actor              text NOT NULL,
    idempotency_key    text NOT NULL UNIQUE CHECK (idempotency_key ~ '^[!-~]{1,255}$'),
    provider_refund_id text UNIQUE CHECK (provider_refund_id <> ''),
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
    failure_reason     text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_refunds_payment_idx ON payment_refunds (payment_id);

-- Refunds never give back more than was paid, and only of a succeeded
-- payment. The payment's row lock makes concurrent refunds of it wait for
-- each other, so each sees the others' amounts.
-- +goose StatementBegin
CREATE FUNCTION payment_refunds_within_paid() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    paid   bigint;
    state  text;
    given  bigint;
BEGIN
    IF NEW.status NOT IN ('pending', 'succeeded') THEN
        RETURN NULL;
    END IF;
    SELECT amount, status INTO paid, state FROM payments WHERE id = NEW.payment_id FOR UPDATE;
    IF state IS DISTINCT FROM 'succeeded' THEN
        RAISE EXCEPTION 'payment % is not succeeded: nothing to refund', NEW.payment_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
    END IF;
    SELECT COALESCE(sum(amount), 0) INTO given FROM payment_refunds
    WHERE payment_id = NEW.payment_id AND status IN ('pending', 'succeeded');
    IF given > paid THEN
        RAISE EXCEPTION 'refunds of payment % (%) exceed its amount (%)', NEW.payment_id, given, paid
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER payment_refunds_within_paid
    AFTER INSERT OR UPDATE OF amount, status, payment_id ON payment_refunds
    FOR EACH ROW EXECUTE FUNCTION payment_refunds_within_paid();

-- A dispute (chargeback) of a payment, as the provider reports it.
CREATE TABLE payment_disputes (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_id          uuid NOT NULL REFERENCES payments (id) ON DELETE RESTRICT,
    provider_dispute_id text NOT NULL UNIQUE CHECK (provider_dispute_id <> ''),
    amount              bigint NOT NULL CHECK (amount >= 0),
    currency            text NOT NULL,
    reason              text NOT NULL DEFAULT '',
    status              text NOT NULL DEFAULT '',
    opened_at           timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz
);

-- Provider events applied: an event id is inserted in the transaction of
-- its effect, so a redelivered event finds its id and changes nothing.
-- The payload is not kept.
CREATE TABLE provider_events (
    provider    text NOT NULL,
    event_id    text NOT NULL CHECK (event_id <> '' AND length(event_id) <= 255),
    type        text NOT NULL,
    object_id   text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);

-- +goose Down
DROP TABLE provider_events;
DROP TABLE payment_disputes;
DROP TRIGGER payment_refunds_within_paid ON payment_refunds;
DROP FUNCTION payment_refunds_within_paid();
DROP TABLE payment_refunds;
DROP TABLE payment_attempts;
DROP TABLE payments;
DROP TABLE payment_customers;
DROP TABLE payment_settings;
