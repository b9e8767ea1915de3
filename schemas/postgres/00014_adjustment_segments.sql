-- +goose Up
-- The plan-version segment an adjustment of a meter concerns. A period
-- with a plan change has one segment per version, each priced by its own
-- version's charges and tiers; late usage found by a recount belongs to
-- one of them, so it records which (the segment's start, as the usage
-- snapshot's lines name it, and the version that prices it). NULL for an
-- amount, and for a correction that names no segment (it concerns the
-- period's last segment).
ALTER TABLE billing_adjustments
    ADD COLUMN plan_version_id uuid REFERENCES plan_versions (id) ON DELETE RESTRICT,
    ADD COLUMN segment_start timestamptz,
    ADD CONSTRAINT billing_adjustments_segment_check CHECK ((plan_version_id IS NULL) = (segment_start IS NULL)),
    ADD CONSTRAINT billing_adjustments_segment_meter_check CHECK (segment_start IS NULL OR meter_slug IS NOT NULL),
    ADD CONSTRAINT billing_adjustments_segment_period_check CHECK (segment_start IS NULL OR billing_period_id IS NOT NULL);
CREATE INDEX billing_adjustments_period_idx ON billing_adjustments (billing_period_id) WHERE billing_period_id IS NOT NULL;

-- +goose Down
DROP INDEX billing_adjustments_period_idx;
ALTER TABLE billing_adjustments
    DROP CONSTRAINT billing_adjustments_segment_period_check,
    DROP CONSTRAINT billing_adjustments_segment_meter_check,
    DROP CONSTRAINT billing_adjustments_segment_check,
    DROP COLUMN segment_start,
    DROP COLUMN plan_version_id;
