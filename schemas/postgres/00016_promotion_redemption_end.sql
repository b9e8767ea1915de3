-- +goose Up
-- When a redemption stopped discounting: a plan change ends those that do
-- not apply to the new plan (a promotion of other plans, or an amount in
-- another currency), and the subscriber may end one. An ended redemption
-- discounts no period that ends after it ended; NULL while it runs.
ALTER TABLE promotion_redemptions ADD COLUMN ended_at timestamptz;

-- +goose Down
ALTER TABLE promotion_redemptions DROP COLUMN ended_at;
