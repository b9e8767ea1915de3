-- +goose Up
-- A payment its provider can never take is emailed to the customer and to
-- the issuer (needs_attention, needs_attention_issuer), a dispute lost to
-- the issuer (dispute_lost_issuer), each once.
ALTER TABLE payment_notices DROP CONSTRAINT payment_notices_kind_check;
ALTER TABLE payment_notices ADD CONSTRAINT payment_notices_kind_check CHECK (kind IN (
    'attempt_failed', 'requires_action', 'past_due', 'suspended', 'needs_attention', 'needs_attention_issuer',
    'dispute_lost_issuer'));

-- A subscription dunned because a payment of its invoice was disputed and
-- lost: that invoice stays paid, so its being closed does not end the
-- dunning, nor does it keep the subscription from being suspended; an
-- admin resumes it by hand (audited).
ALTER TABLE subscription_dunning ADD COLUMN dispute_lost boolean NOT NULL DEFAULT false;

-- A request the provider refused for good (an invalid email, say) is
-- marked so: the next try reads the billing profile again, under a new
-- key, instead of sending the refused parameters until the key expires.
ALTER TABLE payment_customer_requests
    ADD COLUMN refused_at timestamptz,
    ADD COLUMN refused_code text NOT NULL DEFAULT '' CHECK (length(refused_code) <= 100);

-- The payments cycle's back-off of an invoice whose collection could not
-- start (its customer refused by the provider, the provider down): it is
-- listed again after collect_after, behind the others, so that a few
-- failing invoices do not fill every batch. Invoices themselves cannot
-- change once finalized, hence a table of its own.
CREATE TABLE payment_collect_backoff (
    invoice_id    uuid PRIMARY KEY REFERENCES invoices (id) ON DELETE CASCADE,
    failures      integer NOT NULL CHECK (failures >= 1),
    collect_after timestamptz NOT NULL,
    last_error    text NOT NULL DEFAULT '' CHECK (length(last_error) <= 500)
);
CREATE INDEX payment_collect_backoff_after_idx ON payment_collect_backoff (collect_after);

-- +goose Down
DELETE FROM subscription_dunning WHERE dispute_lost;
ALTER TABLE subscription_dunning DROP COLUMN dispute_lost;
DROP TABLE payment_collect_backoff;
ALTER TABLE payment_customer_requests DROP COLUMN refused_at, DROP COLUMN refused_code;
DELETE FROM payment_notices WHERE kind IN ('needs_attention', 'needs_attention_issuer', 'dispute_lost_issuer');
ALTER TABLE payment_notices DROP CONSTRAINT payment_notices_kind_check;
ALTER TABLE payment_notices ADD CONSTRAINT payment_notices_kind_check CHECK (kind IN ('attempt_failed', 'requires_action', 'past_due', 'suspended'));
