-- The roll-ups by API, made again with a fine index granularity, and at a
-- minute grain too (metering/analytics_provider.go, docs/analyst-sql.md).
--
-- Index granularity. A roll-up row by API holds a latency state of a few
-- hundred bytes, and an API has about as many rows a day however busy it is
-- (its routes, methods and status classes), so these tables are small and
-- a question reads a few thousand rows of them. With the default of 8,192
-- rows per granule (the unit ClickHouse reads), the five APIs of one
-- provider read the whole day table, ten times the rows they hold: 53 ms
-- of the 87 ms of its figures at 10M events. 256 rows per granule read what
-- the question needs (13 ms for those days). The setting is fixed when a
-- table is made, so this migration drops the four tables of 0006 and their
-- views and makes them again with it, one table at a time, each backfilled
-- from usage_events as 0006's were: while a table is copied, readers find
-- it missing, then short of the history not yet copied (provider analytics
-- answer 5xx, then partial figures, until the migration ends).
--
-- The minute grain. The hour and day roll-ups cover whole UTC hours and
-- days; what a provider window has outside them (its ends, and in zones
-- whose midnight falls inside a UTC hour, such as Asia/Kolkata at UTC+5:30
-- or Asia/Kathmandu at UTC+5:45, the minutes on each side of every
-- midnight) was read from usage_events, which is sorted by subject: a scan
-- of every row of the window's months for one API (150 to 450 ms at 10M
-- events). usage_api_minute and usage_api_consumer_minute hold those
-- minutes, sorted by api_id and bucket like the others; provider windows
-- are whole minutes.
--
-- The columns, the latency state (quantilesTiming) and the backfill are
-- those of 0006, whose comments explain them: each view takes the rows
-- ingested at or after its cutoff, the INSERT after it copies the older rows
-- once (in slices of whole hours), and readers group without backfilled.
-- A backfill is recorded in rollup_backfills with its cutoff, so the records
-- 0006 left for the dropped tables do not stop these.

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
ORDER BY (api_id, bucket, route, method, status_class, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_minute_mv TO usage_api_minute
AS SELECT
    toStartOfMinute(time, 'UTC') AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, route, method, status_class, backfilled;

INSERT INTO usage_api_minute (bucket, api_id, route, method, status_class, backfilled, requests, units, latency_ms)
SELECT
    toStartOfMinute(time, 'UTC') AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
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
ORDER BY (api_id, bucket, subject, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_consumer_minute_mv TO usage_api_consumer_minute
AS SELECT
    toStartOfMinute(time, 'UTC') AS bucket,
    api_id, subject,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;

INSERT INTO usage_api_consumer_minute (bucket, api_id, subject, backfilled, requests, units)
SELECT
    toStartOfMinute(time, 'UTC') AS bucket,
    api_id, subject,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;

DROP TABLE IF EXISTS usage_api_hour_mv;
DROP TABLE IF EXISTS usage_api_hour;

CREATE TABLE IF NOT EXISTS usage_api_hour
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
ORDER BY (api_id, bucket, route, method, status_class, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_hour_mv TO usage_api_hour
AS SELECT
    toStartOfHour(time, 'UTC') AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, route, method, status_class, backfilled;

INSERT INTO usage_api_hour (bucket, api_id, route, method, status_class, backfilled, requests, units, latency_ms)
SELECT
    toStartOfHour(time, 'UTC') AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, route, method, status_class, backfilled;

DROP TABLE IF EXISTS usage_api_day_mv;
DROP TABLE IF EXISTS usage_api_day;

CREATE TABLE IF NOT EXISTS usage_api_day
(
    bucket       Date,
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
ORDER BY (api_id, bucket, route, method, status_class, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_day_mv TO usage_api_day
AS SELECT
    toDate(time, 'UTC') AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, route, method, status_class, backfilled;

INSERT INTO usage_api_day (bucket, api_id, route, method, status_class, backfilled, requests, units, latency_ms)
SELECT
    toDate(time, 'UTC') AS bucket,
    api_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units,
    quantilesTimingState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, route, method, status_class, backfilled;

DROP TABLE IF EXISTS usage_api_consumer_hour_mv;
DROP TABLE IF EXISTS usage_api_consumer_hour;

CREATE TABLE IF NOT EXISTS usage_api_consumer_hour
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
ORDER BY (api_id, bucket, subject, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_consumer_hour_mv TO usage_api_consumer_hour
AS SELECT
    toStartOfHour(time, 'UTC') AS bucket,
    api_id, subject,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;

INSERT INTO usage_api_consumer_hour (bucket, api_id, subject, backfilled, requests, units)
SELECT
    toStartOfHour(time, 'UTC') AS bucket,
    api_id, subject,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;

DROP TABLE IF EXISTS usage_api_consumer_day_mv;
DROP TABLE IF EXISTS usage_api_consumer_day;

CREATE TABLE IF NOT EXISTS usage_api_consumer_day
(
    bucket     Date,
    api_id     String,
    subject    String,
    backfilled UInt8,
    requests   AggregateFunction(count),
    units      AggregateFunction(sum, Decimal(18, 6))
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (api_id, bucket, subject, backfilled)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_api_consumer_day_mv TO usage_api_consumer_day
AS SELECT
    toDate(time, 'UTC') AS bucket,
    api_id, subject,
    toUInt8(0) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at >= toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;

INSERT INTO usage_api_consumer_day (bucket, api_id, subject, backfilled, requests, units)
SELECT
    toDate(time, 'UTC') AS bucket,
    api_id, subject,
    toUInt8(1) AS backfilled,
    countState() AS requests,
    sumState(units) AS units
FROM usage_events
WHERE ingested_at < toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */
GROUP BY bucket, api_id, subject, backfilled;
