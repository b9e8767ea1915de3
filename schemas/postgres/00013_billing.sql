-- +goose Up
-- Billing: periods that close, the usage snapshots they take, invoices and
-- their lines, gapless invoice numbers, adjustments, the customer credit
-- ledger, billing profiles, tax rules and the platform's fee.
--
-- Amounts are numeric(20, 6) like every amount of the plans; an invoice's
-- amounts are already rounded to the currency's minor unit, so the scale
-- only has to hold them. A finalized invoice never changes its lines: what
-- comes later (late events, corrections) is an adjustment on a later
-- invoice.

-- A subscription's billing period [period_start, period_end). trial marks
-- a period wholly inside the trial (priced at zero). It closes grace after
-- its end: the close takes the usage snapshot; building the invoice marks
-- it invoiced.
CREATE TYPE billing_period_state AS ENUM ('open', 'closed', 'invoiced');

CREATE TABLE billing_periods (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE RESTRICT,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    trial           boolean NOT NULL DEFAULT false,
    state           billing_period_state NOT NULL DEFAULT 'open',
    closed_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscription_id, period_start),
    CHECK (period_end > period_start),
    CHECK ((state = 'open') = (closed_at IS NULL))
);
CREATE INDEX billing_periods_due_idx ON billing_periods (period_end) WHERE state = 'open';

-- What a closed period metered: one row per meter and plan-version segment
-- (the part of the period one plan version was in force), from ClickHouse.
-- through_offsets records how far the snapshot read (JSON object of
-- "<partition>": last offset), so a later recount can tell late events.
CREATE TABLE usage_snapshots (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    billing_period_id uuid NOT NULL UNIQUE REFERENCES billing_periods (id) ON DELETE RESTRICT,
    taken_at          timestamptz NOT NULL DEFAULT now(),
    source            text NOT NULL DEFAULT 'clickhouse' CHECK (source IN ('clickhouse')),
    through_offsets   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(through_offsets) = 'object')
);

CREATE TABLE usage_snapshot_lines (
    snapshot_id     uuid NOT NULL REFERENCES usage_snapshots (id) ON DELETE CASCADE,
    plan_version_id uuid NOT NULL REFERENCES plan_versions (id) ON DELETE RESTRICT,
    segment_start   timestamptz NOT NULL,
    segment_end     timestamptz NOT NULL,
    meter_slug      text NOT NULL,
    quantity        numeric(20, 6) NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (snapshot_id, segment_start, meter_slug),
    CHECK (segment_end > segment_start)
);

-- Invoices. The issuer is the provider organization (numbers are gapless
-- per issuer and year), the customer the consumer organization. One
-- invoice per billing period at most (billing_period_id UNIQUE): a job run
-- twice cannot bill a period twice. number is NULL until finalized.
-- overdue is not a status: an open invoice past due_at is overdue;
-- overdue_at records when the overdue notice went out.
CREATE TYPE invoice_status AS ENUM ('draft', 'open', 'paid', 'void', 'uncollectible');

CREATE TABLE invoices (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    issuer_id         uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    customer_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    subscription_id   uuid NOT NULL REFERENCES subscriptions (id) ON DELETE RESTRICT,
    billing_period_id uuid UNIQUE REFERENCES billing_periods (id) ON DELETE RESTRICT,
    status            invoice_status NOT NULL DEFAULT 'draft',
    number            text UNIQUE,
    currency          text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    subtotal          numeric(20, 6) NOT NULL DEFAULT 0,
    discount          numeric(20, 6) NOT NULL DEFAULT 0 CHECK (discount >= 0),
    tax               numeric(20, 6) NOT NULL DEFAULT 0 CHECK (tax >= 0),
    credit_applied    numeric(20, 6) NOT NULL DEFAULT 0 CHECK (credit_applied >= 0),
    total             numeric(20, 6) NOT NULL DEFAULT 0,
    amount_due        numeric(20, 6) NOT NULL DEFAULT 0 CHECK (amount_due >= 0),
    net_days          integer NOT NULL DEFAULT 14 CHECK (net_days BETWEEN 0 AND 365),
    -- What the invoice cites, so it can be recomputed from them alone:
    -- snapshot, plan versions, promotions, adjustments, tax rule and the
    -- customer's billing profile as it was (JSON object).
    cites             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(cites) = 'object'),
    finalized_at      timestamptz,
    due_at            timestamptz,
    paid_at           timestamptz,
    voided_at         timestamptz,
    overdue_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'draft') = (number IS NULL)),
    CHECK ((status = 'draft') = (finalized_at IS NULL)),
    CHECK ((status = 'paid') = (paid_at IS NOT NULL)),
    CHECK ((status = 'void') = (voided_at IS NOT NULL)),
    CHECK (period_end > period_start)
);
CREATE INDEX invoices_customer_idx ON invoices (customer_id, created_at, id);
CREATE INDEX invoices_issuer_idx ON invoices (issuer_id, created_at, id);
CREATE INDEX invoices_subscription_idx ON invoices (subscription_id, period_start);
CREATE INDEX invoices_due_idx ON invoices (due_at) WHERE status = 'open';

-- An invoice's lines in order. kind says what a line is; meter and tier
-- name what a usage line prices; plan_version_id the version that priced
-- it; reference what an adjustment, discount or credit line comes from.
CREATE TYPE invoice_line_kind AS ENUM ('base_fee', 'usage', 'discount', 'proration_credit', 'proration_charge', 'adjustment', 'credit', 'tax');

CREATE TABLE invoice_lines (
    invoice_id      uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position        integer NOT NULL CHECK (position >= 1),
    kind            invoice_line_kind NOT NULL,
    description     text NOT NULL DEFAULT '',
    plan_version_id uuid REFERENCES plan_versions (id) ON DELETE RESTRICT,
    meter_slug      text,
    tier            integer NOT NULL DEFAULT 0 CHECK (tier >= 0),
    quantity        numeric(20, 6) NOT NULL DEFAULT 0,
    unit_price      numeric(24, 12) NOT NULL DEFAULT 0,
    amount          numeric(20, 6) NOT NULL,
    reference       text NOT NULL DEFAULT '',
    PRIMARY KEY (invoice_id, position)
);

-- A finalized invoice's lines and amounts do not change (payments change
-- its status only).
-- +goose StatementBegin
CREATE FUNCTION invoice_lines_refuse_final() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inv uuid := CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
BEGIN
    IF EXISTS (SELECT 1 FROM invoices WHERE id = inv AND status <> 'draft') THEN
        RAISE EXCEPTION 'invoice % is finalized: its lines cannot change', inv
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'invoice_lines_final', TABLE = 'invoice_lines';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER invoice_lines_final
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoice_lines_refuse_final();

-- +goose StatementBegin
CREATE FUNCTION invoices_refuse_final_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'draft' AND (
        NEW.number IS DISTINCT FROM OLD.number OR NEW.currency <> OLD.currency
        OR NEW.subtotal <> OLD.subtotal OR NEW.discount <> OLD.discount OR NEW.tax <> OLD.tax
        OR NEW.credit_applied <> OLD.credit_applied OR NEW.total <> OLD.total
        OR NEW.cites <> OLD.cites OR NEW.issuer_id <> OLD.issuer_id OR NEW.customer_id <> OLD.customer_id
        OR NEW.period_start <> OLD.period_start OR NEW.period_end <> OLD.period_end
        OR NEW.finalized_at IS DISTINCT FROM OLD.finalized_at OR NEW.due_at IS DISTINCT FROM OLD.due_at
        OR NEW.status = 'draft') THEN
        RAISE EXCEPTION 'invoice % is finalized: only its status may change', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'invoices_final', TABLE = 'invoices';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER invoices_final
    BEFORE UPDATE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_refuse_final_change();

-- Gapless numbering: the next number of an issuer in a year, taken under
-- the row's lock in the finalizing transaction, so a rolled back
-- finalization gives its number back. prefix is the issuer's.
CREATE TABLE invoice_number_sequences (
    issuer_id uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    year      integer NOT NULL CHECK (year BETWEEN 2000 AND 9999),
    last      bigint NOT NULL DEFAULT 0 CHECK (last BETWEEN 0 AND 999999),
    PRIMARY KEY (issuer_id, year)
);

-- Per issuer settings: the invoice number prefix and the platform's fee
-- (a percentage of net revenue, set by platform admins).
CREATE TABLE issuer_settings (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    invoice_prefix  text NOT NULL DEFAULT 'INV' CHECK (invoice_prefix ~ '^[A-Z0-9]{2,12}$'),
    platform_fee_percent numeric(5, 2) NOT NULL DEFAULT 0 CHECK (platform_fee_percent BETWEEN 0 AND 100),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Explicit usage corrections and late usage. A correction is made by a
-- provider or admin (actor, reason); late_usage is what a recount found
-- after its period was invoiced. Either a quantity of a meter (priced by
-- the version of the period) or an amount. invoice_id is set once billed:
-- each adjustment lands on exactly one invoice.
CREATE TYPE adjustment_kind AS ENUM ('correction', 'late_usage');

CREATE TABLE billing_adjustments (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE RESTRICT,
    billing_period_id uuid REFERENCES billing_periods (id) ON DELETE RESTRICT,
    kind            adjustment_kind NOT NULL,
    meter_slug      text,
    quantity        numeric(20, 6),
    amount          numeric(20, 6),
    currency        text CHECK (currency ~ '^[A-Z]{3}$'),
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    actor           text NOT NULL,
    invoice_id      uuid REFERENCES invoices (id) ON DELETE RESTRICT,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((quantity IS NULL) <> (amount IS NULL)),
    CHECK ((quantity IS NULL) = (meter_slug IS NULL)),
    CHECK ((amount IS NULL) = (currency IS NULL))
);
CREATE INDEX billing_adjustments_pending_idx ON billing_adjustments (subscription_id, created_at) WHERE invoice_id IS NULL;

-- The customer's credit balance with an issuer, in a currency: the sum of
-- the ledger's amounts (positive grants, negative uses), never below zero
-- (the service takes the balance row lock; the CHECK holds it).
CREATE TABLE credit_balances (
    issuer_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    customer_id uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance     numeric(20, 6) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    PRIMARY KEY (issuer_id, customer_id, currency)
);

CREATE TYPE credit_entry_kind AS ENUM ('proration', 'goodwill', 'refund', 'applied');

CREATE TABLE credit_ledger (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    issuer_id   uuid NOT NULL,
    customer_id uuid NOT NULL,
    currency    text NOT NULL,
    kind        credit_entry_kind NOT NULL,
    amount      numeric(20, 6) NOT NULL CHECK (amount <> 0),
    balance_after numeric(20, 6) NOT NULL CHECK (balance_after >= 0),
    invoice_id  uuid REFERENCES invoices (id) ON DELETE RESTRICT,
    reason      text NOT NULL DEFAULT '',
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (issuer_id, customer_id, currency) REFERENCES credit_balances (issuer_id, customer_id, currency),
    CHECK ((kind = 'applied') = (amount < 0))
);
CREATE INDEX credit_ledger_customer_idx ON credit_ledger (issuer_id, customer_id, currency, id);

-- A consumer organization's billing profile, copied into each invoice's
-- cites when it is finalized.
CREATE TABLE billing_profiles (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    legal_name      text NOT NULL CHECK (length(legal_name) BETWEEN 1 AND 200),
    address_line1   text NOT NULL DEFAULT '' CHECK (length(address_line1) <= 200),
    address_line2   text NOT NULL DEFAULT '' CHECK (length(address_line2) <= 200),
    city            text NOT NULL DEFAULT '' CHECK (length(city) <= 100),
    postal_code     text NOT NULL DEFAULT '' CHECK (length(postal_code) <= 20),
    country         text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    region          text NOT NULL DEFAULT '' CHECK (length(region) <= 100),
    tax_id          text NOT NULL DEFAULT '' CHECK (length(tax_id) <= 32),
    email           text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- An issuer's tax rules: a rate for customers in a country (and region,
-- '' = the whole country), inclusive or exclusive, effective over
-- [effective_from, effective_until). The most specific rule in force at
-- the period's end applies.
CREATE TABLE tax_rules (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    issuer_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    country         text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    region          text NOT NULL DEFAULT '' CHECK (length(region) <= 100),
    name            text NOT NULL DEFAULT '' CHECK (length(name) <= 100),
    rate_percent    numeric(7, 4) NOT NULL CHECK (rate_percent BETWEEN 0 AND 100),
    inclusive       boolean NOT NULL DEFAULT false,
    reverse_charge  boolean NOT NULL DEFAULT true,
    effective_from  timestamptz NOT NULL,
    effective_until timestamptz,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (effective_until IS NULL OR effective_until > effective_from)
);
CREATE INDEX tax_rules_lookup_idx ON tax_rules (issuer_id, country, region, effective_from);

-- Notices sent about an invoice (reminders before, on and after the due
-- date), each once.
CREATE TYPE invoice_notice_kind AS ENUM ('finalized', 'due_soon', 'due', 'overdue');

CREATE TABLE invoice_notices (
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    kind       invoice_notice_kind NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, kind)
);

-- Net terms per plan version (days from finalization to due date).
ALTER TABLE plan_versions ADD COLUMN net_days integer NOT NULL DEFAULT 14 CHECK (net_days BETWEEN 0 AND 365);

-- +goose Down
ALTER TABLE plan_versions DROP COLUMN net_days;
DROP TABLE invoice_notices;
DROP TYPE invoice_notice_kind;
DROP TABLE tax_rules;
DROP TABLE billing_profiles;
DROP TABLE credit_ledger;
DROP TYPE credit_entry_kind;
DROP TABLE credit_balances;
DROP TABLE billing_adjustments;
DROP TYPE adjustment_kind;
DROP TABLE issuer_settings;
DROP TABLE invoice_number_sequences;
DROP TRIGGER invoices_final ON invoices;
DROP FUNCTION invoices_refuse_final_change();
DROP TRIGGER invoice_lines_final ON invoice_lines;
DROP FUNCTION invoice_lines_refuse_final();
DROP TABLE invoice_lines;
DROP TYPE invoice_line_kind;
DROP TABLE invoices;
DROP TYPE invoice_status;
DROP TABLE usage_snapshot_lines;
DROP TABLE usage_snapshots;
DROP TABLE billing_periods;
DROP TYPE billing_period_state;
