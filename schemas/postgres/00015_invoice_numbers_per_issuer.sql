-- +goose Up
-- An invoice number is unique per issuer, not across issuers: numbers are
-- gapless per issuer and year, and every issuer starts with the default
-- prefix (INV), so two providers' first invoices of a year are both
-- INV-<YYYY>-000001. Unique across issuers, the second one's
-- finalization failed.
ALTER TABLE invoices DROP CONSTRAINT invoices_number_key;
ALTER TABLE invoices ADD CONSTRAINT invoices_issuer_number_key UNIQUE (issuer_id, number);

-- +goose Down
ALTER TABLE invoices DROP CONSTRAINT invoices_issuer_number_key;
ALTER TABLE invoices ADD CONSTRAINT invoices_number_key UNIQUE (number);
