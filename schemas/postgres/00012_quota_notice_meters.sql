-- +goose Up
-- A notice of a meter's quota names the meter (its slug), so the request
-- quota's notice and a meter's at the same threshold and quota are two
-- notices; '' is the request quota, the key of every notice sent before.
ALTER TABLE quota_notices ADD COLUMN meter text NOT NULL DEFAULT ''
    CHECK (meter = '' OR meter ~ '^[a-z0-9][a-z0-9_-]{0,62}$');
ALTER TABLE quota_notices DROP CONSTRAINT quota_notices_pkey,
    ADD PRIMARY KEY (subscription_id, period_start, threshold, quota, meter, channel);

-- +goose Down
DELETE FROM quota_notices WHERE meter <> '';
ALTER TABLE quota_notices DROP CONSTRAINT quota_notices_pkey,
    ADD PRIMARY KEY (subscription_id, period_start, threshold, quota, channel);
ALTER TABLE quota_notices DROP COLUMN meter;
