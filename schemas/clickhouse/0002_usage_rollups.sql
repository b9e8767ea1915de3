-- Roll-ups of usage_events by minute, hour and day, per subject, API, key,
-- route, method and status class. Materialized views fill them on every insert
-- into usage_events, so they are exactly once whenever usage_events is.
-- Read them with countMerge, sumMerge and quantilesMerge(0.5, 0.9, 0.99).
CREATE TABLE IF NOT EXISTS usage_rollup_minute
(
    bucket         DateTime,
    subject        String,
    api_id         String,
    key_id         String,
    route          String,
    method         String,
    status_class   UInt8,
    requests       AggregateFunction(count),
    units          AggregateFunction(sum, Decimal(18, 6)),
    request_bytes  AggregateFunction(sum, UInt64),
    response_bytes AggregateFunction(sum, UInt64),
    latency_ms     AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (subject, bucket, api_id, key_id, route, method, status_class);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_minute_mv TO usage_rollup_minute
AS SELECT
    toStartOfMinute(time) AS bucket,
    subject, api_id, key_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    countState() AS requests,
    sumState(units) AS units,
    sumState(request_bytes) AS request_bytes,
    sumState(response_bytes) AS response_bytes,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
GROUP BY bucket, subject, api_id, key_id, route, method, status_class;

CREATE TABLE IF NOT EXISTS usage_rollup_hour
(
    bucket         DateTime,
    subject        String,
    api_id         String,
    key_id         String,
    route          String,
    method         String,
    status_class   UInt8,
    requests       AggregateFunction(count),
    units          AggregateFunction(sum, Decimal(18, 6)),
    request_bytes  AggregateFunction(sum, UInt64),
    response_bytes AggregateFunction(sum, UInt64),
    latency_ms     AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (subject, bucket, api_id, key_id, route, method, status_class);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_hour_mv TO usage_rollup_hour
AS SELECT
    toStartOfHour(time) AS bucket,
    subject, api_id, key_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    countState() AS requests,
    sumState(units) AS units,
    sumState(request_bytes) AS request_bytes,
    sumState(response_bytes) AS response_bytes,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
GROUP BY bucket, subject, api_id, key_id, route, method, status_class;

CREATE TABLE IF NOT EXISTS usage_rollup_day
(
    bucket         Date,
    subject        String,
    api_id         String,
    key_id         String,
    route          String,
    method         String,
    status_class   UInt8,
    requests       AggregateFunction(count),
    units          AggregateFunction(sum, Decimal(18, 6)),
    request_bytes  AggregateFunction(sum, UInt64),
    response_bytes AggregateFunction(sum, UInt64),
    latency_ms     AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (subject, bucket, api_id, key_id, route, method, status_class);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_day_mv TO usage_rollup_day
AS SELECT
    toDate(time) AS bucket,
    subject, api_id, key_id, route, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    countState() AS requests,
    sumState(units) AS units,
    sumState(request_bytes) AS request_bytes,
    sumState(response_bytes) AS response_bytes,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM usage_events
GROUP BY bucket, subject, api_id, key_id, route, method, status_class;
