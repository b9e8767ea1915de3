-- +goose Up
-- What is billed stays as it was billed. 00013's guards left holes: a
-- finalized invoice's amount_due, net_days, subscription and period could
-- change, a paid or void invoice could be set back to open (and voided
-- again, refunding its credit twice), a line could be moved into a
-- finalized invoice, the credit ledger and a billed adjustment could be
-- rewritten, and a finalized invoice could be deleted.

-- A finalized invoice: every column but its status and the status
-- timestamps is frozen (compared as a whole row, so a column added later
-- is frozen too), and its status moves forward only: open to paid, void
-- or uncollectible, uncollectible to paid or void.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION invoices_refuse_final_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'draft' THEN
        RETURN NEW;
    END IF;
    IF (to_jsonb(NEW) - ARRAY['status', 'paid_at', 'voided_at', 'overdue_at', 'updated_at'])
        IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['status', 'paid_at', 'voided_at', 'overdue_at', 'updated_at']) THEN
        RAISE EXCEPTION 'invoice % is finalized: only its status may change', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'invoices_final', TABLE = 'invoices';
    END IF;
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'open' AND NEW.status IN ('paid', 'void', 'uncollectible'))
        OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void'))) THEN
        RAISE EXCEPTION 'invoice %: status % cannot become %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'invoices_final', TABLE = 'invoices';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

-- Only a draft may be deleted: a finalized invoice took a number of its
-- issuer's gapless sequence, and its lines and credit are cited.
-- +goose StatementBegin
CREATE FUNCTION invoices_refuse_final_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'draft' THEN
        RAISE EXCEPTION 'invoice % is finalized: it cannot be deleted', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'invoices_final', TABLE = 'invoices';
    END IF;
    RETURN OLD;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER invoices_final_delete
    BEFORE DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_refuse_final_delete();

-- A line's invoice before and after the change must both be drafts, so a
-- line cannot be moved into (or out of) a finalized invoice.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION invoice_lines_refuse_final() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inv uuid;
BEGIN
    FOREACH inv IN ARRAY CASE TG_OP
            WHEN 'INSERT' THEN ARRAY[NEW.invoice_id]
            WHEN 'DELETE' THEN ARRAY[OLD.invoice_id]
            ELSE ARRAY[OLD.invoice_id, NEW.invoice_id] END LOOP
        IF EXISTS (SELECT 1 FROM invoices WHERE id = inv AND status <> 'draft') THEN
            RAISE EXCEPTION 'invoice % is finalized: its lines cannot change', inv
                USING ERRCODE = 'restrict_violation', CONSTRAINT = 'invoice_lines_final', TABLE = 'invoice_lines';
        END IF;
    END LOOP;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

-- The credit ledger is append-only: a balance is the sum of its entries,
-- so a correction is a new entry, never an edit.
-- +goose StatementBegin
CREATE FUNCTION credit_ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit ledger entry % cannot change: add an entry instead', OLD.id
        USING ERRCODE = 'restrict_violation', CONSTRAINT = 'credit_ledger_append_only', TABLE = 'credit_ledger';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER credit_ledger_append_only
    BEFORE UPDATE OR DELETE ON credit_ledger
    FOR EACH ROW EXECUTE FUNCTION credit_ledger_refuse_change();

-- An adjustment's one change is being billed: invoice_id set once, from
-- NULL. Its quantity, amount and what it concerns never change (the
-- below-zero check and the invoices that cite it read them), and a billed
-- adjustment is not deleted.
-- +goose StatementBegin
CREATE FUNCTION billing_adjustments_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.invoice_id IS NOT NULL THEN
            RAISE EXCEPTION 'adjustment % is billed: it cannot be deleted', OLD.id
                USING ERRCODE = 'restrict_violation', CONSTRAINT = 'billing_adjustments_final', TABLE = 'billing_adjustments';
        END IF;
        RETURN OLD;
    END IF;
    IF (OLD.invoice_id IS NOT NULL AND NEW.invoice_id IS DISTINCT FROM OLD.invoice_id)
        OR (to_jsonb(NEW) - 'invoice_id') IS DISTINCT FROM (to_jsonb(OLD) - 'invoice_id') THEN
        RAISE EXCEPTION 'adjustment % cannot change: only its invoice is set, once', OLD.id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'billing_adjustments_final', TABLE = 'billing_adjustments';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER billing_adjustments_final
    BEFORE UPDATE OR DELETE ON billing_adjustments
    FOR EACH ROW EXECUTE FUNCTION billing_adjustments_refuse_change();

-- An issuer may finalize more than 999,999 invoices a year: the number's
-- six digits are a minimum width (INV-2026-1000000 follows 999999).
ALTER TABLE invoice_number_sequences DROP CONSTRAINT invoice_number_sequences_last_check;
ALTER TABLE invoice_number_sequences ADD CONSTRAINT invoice_number_sequences_last_check CHECK (last >= 0);

-- +goose Down
ALTER TABLE invoice_number_sequences DROP CONSTRAINT invoice_number_sequences_last_check;
ALTER TABLE invoice_number_sequences ADD CONSTRAINT invoice_number_sequences_last_check CHECK (last BETWEEN 0 AND 999999);
DROP TRIGGER billing_adjustments_final ON billing_adjustments;
DROP FUNCTION billing_adjustments_refuse_change();
DROP TRIGGER credit_ledger_append_only ON credit_ledger;
DROP FUNCTION credit_ledger_refuse_change();
DROP TRIGGER invoices_final_delete ON invoices;
DROP FUNCTION invoices_refuse_final_delete();
