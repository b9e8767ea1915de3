-- +goose Up
-- A free_units promotion names the meter whose units it makes free, by the
-- slug plan files and quotes use, so one promotion serves every plan of the
-- provider that prices a meter of that slug; the other kinds name none. A
-- description is bounded as a plan's is.
ALTER TABLE promotions
    ADD COLUMN meter text CHECK (meter ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    ADD CONSTRAINT promotions_meter_check2 CHECK ((kind = 'free_units') = (meter IS NOT NULL)),
    ADD CONSTRAINT promotions_description_check2 CHECK (length(description) <= 5000);

-- +goose Down
ALTER TABLE promotions
    DROP CONSTRAINT promotions_description_check2,
    DROP CONSTRAINT promotions_meter_check2,
    DROP COLUMN meter;
