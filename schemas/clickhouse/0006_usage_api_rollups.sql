-- Roll-ups by API, for the provider's questions (metering/analytics_provider.go,
-- docs/analyst-sql.md). The roll-ups of 0002 are sorted by subject first, so a
-- query for one API read every subscription's rows in the range; these are
-- sorted by api_id and bucket:
--   usage_api_hour, usage_api_day: requests, units and latency per API, route,
--     method and status class (top routes, error rates, latency, volume);
--   usage_api_consumer_hour, usage_api_consumer_day: requests and units per
--     API and subject (unique and top consumers).
-- Buckets are UTC hours and UTC days whatever the server's time zone.
--
-- Latency is a quantilesTiming state: exact below 1,024 ms (and for up to
-- 5,670 values), in 16 ms steps above, latencies over 30 s counted as 30 s.
-- Its states have a bounded size, so merging them stays cheap however many
-- calls a row holds: measured on 18.16 against quantiles (a reservoir of
-- 8,192 values), quantilesTDigest and a fixed-bucket histogram (sumMap), it
-- merged fastest with rows of many calls and was the closest to the exact
-- p50, p90 and p99 (docs/analyst-sql.md). Read it with
-- quantilesTimingMerge(0.5, 0.9, 0.99).
--
-- Backfill, exactly once with live inserts running: each view takes only
-- rows with ingested_at at or after a cutoff, and the INSERT after it copies
-- the rows before the cutoff from usage_events. The migrator (schemas/migrate,
-- backfill.go) writes the ClickHouse server's time at creation in place of
-- the placeholder toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill
-- cutoff */, reads the cutoff a view really has back from system.tables (a
-- rerun finds the view made by an earlier one), waits for the processors'
-- batches stamped before it to land, and runs each INSERT once: it records
-- it in rollup_backfills, and a run that finds backfilled rows without that
-- record (an earlier run died midway) deletes them before copying again.
-- Left unchanged, as a plain run of this file does, the placeholder makes
-- the views take every row and the INSERTs copy none.
-- On an empty usage_events (a new installation, migrated before its
-- processors start) the views take every row and nothing is copied.
-- Rows inserted later must carry their insert time in ingested_at, as the
-- processors write it: a row stamped before the cutoff and inserted after
-- the backfill is in neither.
-- backfilled (0: the view, 1: the backfill) is the last sorting column, so
-- merges keep the two apart; readers group without it.

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
ORDER BY (api_id, bucket, route, method, status_class, backfilled);

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
ORDER BY (api_id, bucket, route, method, status_class, backfilled);

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
ORDER BY (api_id, bucket, subject, backfilled);

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
ORDER BY (api_id, bucket, subject, backfilled);

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

-- One row per roll-up whose backfill finished, with the cutoff it used.
CREATE TABLE IF NOT EXISTS rollup_backfills
(
    rollup      String,
    cutoff      DateTime,
    finished_at DateTime
)
ENGINE = MergeTree()
ORDER BY rollup;

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
