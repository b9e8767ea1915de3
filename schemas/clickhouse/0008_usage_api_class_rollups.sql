-- Roll-ups by API and status class only, per UTC hour and quarter hour,
-- for the days of a provider's figures in a zone whose midnight is not a
-- UTC midnight (metering/analytics_provider.go).
--
-- Such a day (America/New_York, Asia/Kolkata at half past a UTC hour,
-- Asia/Kathmandu at a quarter to) cannot come from the day roll-up: it is
-- read from hours, and around its midnight from shorter buckets. The roll-ups
-- by route hold a row per route, method and status class, about forty an
-- hour for a busy API; these hold one per status class. Every zone's
-- midnight today falls on a quarter hour, so the half hour on each side of
-- a Kolkata midnight is two quarter-hour rows per class here, against sixty
-- minute rows per route in usage_api_minute (what is left, the minutes at a
-- window's ends, still comes from there).
--
-- The quarter-hour roll-up is sorted by the quarter of the UTC day after
-- api_id: the quarter hours around a zone's midnights fall on the same
-- quarters of every day (two sets a year where clocks change), so a
-- window's are a few runs of rows instead of one short range a day.
--
-- Columns, latency state, backfill and granularity as in 0006 and 0007.
CREATE TABLE IF NOT EXISTS usage_api_class_quarter
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
ORDER BY (api_id, intDiv(toUInt32(bucket) % 86400, 900), bucket, status_class, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_class_quarter_mv TO usage_api_class_quarter
AS SELECT
    toStartOfFifteenMinutes(time, 'UTC') AS bucket,
    api_id,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, status_class, backfilled;

INSERT INTO usage_api_class_quarter (bucket, api_id, status_class, backfilled, requests, units, latency_ms)
SELECT
    toStartOfFifteenMinutes(time, 'UTC') AS bucket,
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
