-- +goose Up
-- What keeps a charge from standing when its payment no longer wants it,
-- and payments the provider can never take out of retries and dunning.

-- needs_attention: the provider can never take this amount (below its
-- minimum, above its maximum, not a whole number of its minor units);
-- neither retried nor dunned, the issuer settles it (attention_reason
-- says why). first_failed_at: retry days count from it.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'processing', 'requires_action', 'succeeded', 'failed', 'canceled', 'needs_attention'));
ALTER TABLE payments
    ADD COLUMN attention_reason text NOT NULL DEFAULT '' CHECK (length(attention_reason) <= 500),
    ADD COLUMN first_failed_at timestamptz;

-- in_doubt: canceled while its call may still reach the provider (no
-- provider id known yet), so reconciliation looks it up until found or
-- past the key's lifetime. late_succeeded_at: it succeeded at the provider
-- after it was canceled or another attempt paid; its charge is refunded.
-- check_after: reconciliation backs off an attempt long under way.
ALTER TABLE payment_attempts
    ADD COLUMN in_doubt boolean NOT NULL DEFAULT false,
    ADD COLUMN late_succeeded_at timestamptz,
    ADD COLUMN check_after timestamptz;
CREATE INDEX payment_attempts_in_doubt_idx ON payment_attempts (updated_at) WHERE in_doubt;

-- stray_attempt_id: the refund gives back that attempt's charge, one the
-- payment did not keep (a second success, a success after a void), not
-- the payment's; it counts against that charge only, once per attempt.
ALTER TABLE payment_refunds ADD COLUMN stray_attempt_id uuid REFERENCES payment_attempts (id) ON DELETE RESTRICT;
CREATE UNIQUE INDEX payment_refunds_one_per_stray ON payment_refunds (stray_attempt_id) WHERE stray_attempt_id IS NOT NULL;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION payment_refunds_within_paid() RETURNS trigger
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
    IF NEW.stray_attempt_id IS NOT NULL THEN
        -- A stray charge is refunded whatever the payment's state.
        IF NOT EXISTS (SELECT 1 FROM payment_attempts
                WHERE id = NEW.stray_attempt_id AND payment_id = NEW.payment_id AND late_succeeded_at IS NOT NULL) THEN
            RAISE EXCEPTION 'attempt % of payment % has no stray charge', NEW.stray_attempt_id, NEW.payment_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
        END IF;
        IF NEW.amount > paid THEN
            RAISE EXCEPTION 'refund of attempt % exceeds its charge (%)', NEW.stray_attempt_id, paid
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
        END IF;
        RETURN NULL;
    END IF;
    IF state IS DISTINCT FROM 'succeeded' THEN
        RAISE EXCEPTION 'payment % is not succeeded: nothing to refund', NEW.payment_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
    END IF;
    SELECT COALESCE(sum(amount), 0) INTO given FROM payment_refunds
    WHERE payment_id = NEW.payment_id AND status IN ('pending', 'succeeded') AND stray_attempt_id IS NULL;
    IF given > paid THEN
        RAISE EXCEPTION 'refunds of payment % (%) exceed its amount (%)', NEW.payment_id, given, paid
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION payment_refunds_within_paid() RETURNS trigger
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
DROP INDEX payment_refunds_one_per_stray;
ALTER TABLE payment_refunds DROP COLUMN stray_attempt_id;
DROP INDEX payment_attempts_in_doubt_idx;
ALTER TABLE payment_attempts DROP COLUMN in_doubt, DROP COLUMN late_succeeded_at, DROP COLUMN check_after;
ALTER TABLE payments DROP COLUMN attention_reason, DROP COLUMN first_failed_at;
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'processing', 'requires_action', 'succeeded', 'failed', 'canceled'));
