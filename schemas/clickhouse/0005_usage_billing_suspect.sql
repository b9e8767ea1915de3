-- Hours the billing roll-up may have missed rows of. A materialized view is
-- not written atomically with its source: an insert into usage_events can
-- store its rows and still fail while pushing them to usage_billing_hour_mv
-- (too many parts, a memory limit, a crash between the two writes). The
-- processor then finds those rows written and does not insert them again, so
-- the roll-up would lack them for good. It records here the (subject, hour)
-- of every row such a failed insert wrote, before it drops the rows from its
-- retry, and metering.MeterTotalsRollupMany counts these hours from
-- usage_events, never from the roll-up. A row recorded twice is harmless.
-- hour is the UTC hour (toStartOfHour(time, 'UTC')), as the roll-up's bucket.
CREATE TABLE IF NOT EXISTS usage_billing_suspect
(
    subject     String,
    hour        DateTime,
    recorded_at DateTime
)
ENGINE = MergeTree()
ORDER BY (subject, hour);
