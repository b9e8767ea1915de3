-- Roll-ups by API and status class only, per UTC hour and minute, for the
-- provider figures that are not by route (metering/analytics_provider.go):
-- the total, each day of the caller's zone and each API.
--
-- In a zone whose midnight is not a UTC midnight (America/New_York, and
-- Asia/Kolkata at half past a UTC hour) a day of the zone cannot come from
-- the day roll-up: it is read from hours, and around its midnight from
-- minutes. usage_api_hour and usage_api_minute hold a row per route, method
-- and status class, about forty an hour for a busy API, each with a latency
-- state to merge: 30 days of one provider's five APIs in Kolkata read about
-- 275,000 of them (200 ms at 10M events). These hold one row per status
-- class, a tenth of that. Routes are still read from the roll-ups by route,
-- over pieces cut at UTC midnights (whole days from usage_api_day).
--
-- Columns, latency state, backfill and granularity as in 0006 and 0007.

CREATE TABLE IF NOT EXISTS usage_api_class_minute
(
    bucket       DateTime,
    api_id       String,
    status_class UInt8,
    backfilled   UInt8,
    requests     AggregateFunction(count),
    units        AggregateFunction(sum, Decimal(18, 6)),
    latency_ms   AggregateFunction(quantilesTiming(0.5, 0.9, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (api_id, bucket, status_class, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_class_minute_mv TO usage_api_class_minute
AS SELECT
    toStartOfMinute(time, 'UTC') AS bucket,
    api_id,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, status_class, backfilled;

INSERT INTO usage_api_class_minute (bucket, api_id, status_class, backfilled, requests, units, latency_ms)
SELECT
    toStartOfMinute(time, 'UTC') AS bucket,
    api_id,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, status_class, backfilled;

CREATE TABLE IF NOT EXISTS usage_api_class_hour
(
    bucket       DateTime,
    api_id       String,
    status_class UInt8,
    backfilled   UInt8,
    requests     AggregateFunction(count),
    units        AggregateFunction(sum, Decimal(18, 6)),
    latency_ms   AggregateFunction(quantilesTiming(0.5, 0.9, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (api_id, bucket, status_class, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_class_hour_mv TO usage_api_class_hour
AS SELECT
    toStartOfHour(time, 'UTC') AS bucket,
    api_id,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, status_class, backfilled;

INSERT INTO usage_api_class_hour (bucket, api_id, status_class, backfilled, requests, units, latency_ms)
SELECT
    toStartOfHour(time, 'UTC') AS bucket,
    api_id,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, status_class, backfilled;
