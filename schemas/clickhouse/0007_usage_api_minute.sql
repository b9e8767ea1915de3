-- Minute roll-ups by API, for the edges of provider windows
-- (metering/analytics_provider.go). The hour and day roll-ups of 0006 cover
-- whole UTC hours and days; what a window has outside them (its ends, and in
-- zones whose midnight falls inside a UTC hour, such as Asia/Kolkata at
-- UTC+5:30 or Asia/Kathmandu at UTC+5:45, the minutes on each side of every
-- midnight) was read from usage_events, which is sorted by subject: a scan of
-- every row of the window's months for one API. These are sorted by api_id
-- and bucket like the roll-ups of 0006, so the edges read only the API's rows
-- in those minutes. Provider windows are whole minutes.
--
-- The columns, the latency state and the backfill are those of 0006 (see
-- there): each view takes rows ingested at or after its cutoff, the INSERT
-- after it copies the older rows once, and readers group without
-- backfilled.

CREATE TABLE IF NOT EXISTS usage_api_minute
(
    bucket       DateTime,
    api_id       String,
    route        String,
    method       String,
    status_class UInt8,
    backfilled   UInt8,
    requests     AggregateFunction(count),
    units        AggregateFunction(sum, Decimal(18, 6)),
    latency_ms   AggregateFunction(quantilesTiming(0.5, 0.9, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (api_id, bucket, route, method, status_class, backfilled);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_minute_mv TO usage_api_minute
AS SELECT
    toStartOfMinute(time) AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, route, method, status_class, backfilled;

CREATE TABLE IF NOT EXISTS usage_api_consumer_minute
(
    bucket     DateTime,
    api_id     String,
    subject    String,
    backfilled UInt8,
    requests   AggregateFunction(count),
    units      AggregateFunction(sum, Decimal(18, 6))
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (api_id, bucket, subject, backfilled);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_consumer_minute_mv TO usage_api_consumer_minute
AS SELECT
    toStartOfMinute(time) AS bucket,
    api_id, subject,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;

INSERT INTO usage_api_minute (bucket, api_id, route, method, status_class, backfilled, requests, units, latency_ms)
SELECT
    toStartOfMinute(time) AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, route, method, status_class, backfilled;

INSERT INTO usage_api_consumer_minute (bucket, api_id, subject, backfilled, requests, units)
SELECT
    toStartOfMinute(time) AS bucket,
    api_id, subject,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;
