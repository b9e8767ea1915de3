-- +goose Up
-- When a refund succeeded, written once by the service clock (the payouts
-- statement's month), and when the provider reported failed one that had
-- succeeded (the card's bank could not return it: the money is back with
-- the platform, and the statement adds it back in that month).
ALTER TABLE payment_refunds
    ADD COLUMN succeeded_at timestamptz,
    ADD COLUMN failed_at timestamptz;
UPDATE payment_refunds SET succeeded_at = updated_at WHERE status = 'succeeded';
ALTER TABLE payment_refunds
    ADD CONSTRAINT payment_refunds_failed_at CHECK (failed_at IS NULL OR status = 'failed');
DROP INDEX payment_refunds_succeeded_idx;
CREATE INDEX payment_refunds_succeeded_idx ON payment_refunds (succeeded_at) WHERE succeeded_at IS NOT NULL;
CREATE INDEX payment_refunds_failed_idx ON payment_refunds (failed_at) WHERE failed_at IS NOT NULL;

-- When the provider took a dispute's amount from the platform's balance
-- (a chargeback, not an inquiry: at its opening, or when an inquiry
-- became one) and when it gave it back (the dispute won). The payouts
-- statement subtracts a dispute in the month its funds were withdrawn
-- and adds it back in the month it was won; a dispute without
-- withdrawn_at (recorded before this column) counts when lost.
ALTER TABLE payment_disputes
    ADD COLUMN withdrawn_at timestamptz,
    ADD COLUMN reinstated_at timestamptz,
    ADD CONSTRAINT payment_disputes_reinstated_at CHECK (reinstated_at IS NULL OR withdrawn_at IS NOT NULL);
CREATE INDEX payment_disputes_withdrawn_idx ON payment_disputes (withdrawn_at) WHERE withdrawn_at IS NOT NULL;
CREATE INDEX payment_disputes_reinstated_idx ON payment_disputes (reinstated_at) WHERE reinstated_at IS NOT NULL;

-- A refund made at the provider is a fact: it is recorded whole, and
-- only money the provider returned (succeeded, or made outside Veil and
-- pending there) is compared with the charge. Veil's own request must
-- still fit what is left after every refund, credit ones included. So a
-- credit refund followed by a cash one in the dashboard can total more
-- than was paid; the payment is flagged (attention_reason) rather than
-- the cash dropped, and amount_refunded may exceed amount.
ALTER TABLE payments DROP CONSTRAINT payments_check;
ALTER TABLE payments ADD CONSTRAINT payments_amount_refunded_check CHECK (amount_refunded >= 0);

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
    -- The provider never returns more than it charged.
    SELECT COALESCE(sum(amount), 0) INTO given FROM payment_refunds
    WHERE payment_id = NEW.payment_id AND stray_attempt_id IS NULL AND destination = 'payment_method'
        AND (status = 'succeeded' OR (external AND status = 'pending'));
    IF given > paid THEN
        RAISE EXCEPTION 'refunds of payment % at the provider (%) exceed its amount (%)', NEW.payment_id, given, paid
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
    END IF;
    -- A refund Veil asks for fits what every refund left.
    IF TG_OP = 'INSERT' AND NOT NEW.external THEN
        SELECT COALESCE(sum(amount), 0) INTO given FROM payment_refunds
        WHERE payment_id = NEW.payment_id AND status IN ('pending', 'succeeded') AND stray_attempt_id IS NULL;
        IF given > paid THEN
            RAISE EXCEPTION 'refunds of payment % (%) exceed its amount (%)', NEW.payment_id, given, paid
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_paid', TABLE = 'payment_refunds';
        END IF;
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
ALTER TABLE payments DROP CONSTRAINT payments_amount_refunded_check;
ALTER TABLE payments ADD CONSTRAINT payments_check CHECK (amount_refunded >= 0 AND amount_refunded <= amount);
DROP INDEX payment_disputes_reinstated_idx;
DROP INDEX payment_disputes_withdrawn_idx;
ALTER TABLE payment_disputes DROP COLUMN reinstated_at, DROP COLUMN withdrawn_at;
DROP INDEX payment_refunds_failed_idx;
DROP INDEX payment_refunds_succeeded_idx;
CREATE INDEX payment_refunds_succeeded_idx ON payment_refunds (updated_at) WHERE status = 'succeeded';
ALTER TABLE payment_refunds DROP COLUMN failed_at, DROP COLUMN succeeded_at;
