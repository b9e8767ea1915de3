-- The billing roll-up: hourly totals of the billable events (no gateway
-- refusal, status below 500: metering.Billable's rule) per subject, API,
-- method and status class, holding what every meter aggregation without a
-- route filter needs (metering.MeterTotalsRollupMany): the count, sums and
-- maxima of units, request_bytes, response_bytes and latency_ms, and the set
-- of key ids (with keyless telling whether the empty key is among them, as
-- a unique_count counts only non-empty keys). The usage roll-ups of 0002
-- cannot serve billing: they keep no refusal, and their states would be
-- read alongside refused calls.
--
-- Sums of the integer fields are Decimal(38, 0), as the base-table query
-- sums them, so no sum wraps and both give the same figure.
--
-- Hours are UTC hours whatever the server's time zone: readers split
-- windows at whole hours of Unix time, which a zone with a half-hour offset
-- would not match.
--
-- Column names differ from usage_events' so that the view's aliases do not
-- shadow the columns the other aggregates read (units is both summed and
-- maximized).
CREATE TABLE IF NOT EXISTS usage_billing_hour
(
    bucket             DateTime,
    subject            String,
    api_id             String,
    method             String,
    status_class       UInt8,
    requests           AggregateFunction(count),
    units_sum          AggregateFunction(sum, Decimal(18, 6)),
    request_bytes_sum  AggregateFunction(sum, Decimal(38, 0)),
    response_bytes_sum AggregateFunction(sum, Decimal(38, 0)),
    latency_ms_sum     AggregateFunction(sum, Decimal(38, 0)),
    units_max          AggregateFunction(max, Decimal(18, 6)),
    request_bytes_max  AggregateFunction(max, UInt64),
    response_bytes_max AggregateFunction(max, UInt64),
    latency_ms_max     AggregateFunction(max, UInt32),
    key_ids            AggregateFunction(uniqExact, String),
    keyless            AggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(bucket)
ORDER BY (subject, bucket, api_id, method, status_class);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_billing_hour_mv TO usage_billing_hour
AS SELECT
    toStartOfHour(time, 'UTC') AS bucket,
    subject, api_id, method,
    toUInt8(intDiv(status, 100)) AS status_class,
    countState() AS requests,
    sumState(units) AS units_sum,
    sumState(toDecimal128(request_bytes, 0)) AS request_bytes_sum,
    sumState(toDecimal128(response_bytes, 0)) AS response_bytes_sum,
    sumState(toDecimal128(latency_ms, 0)) AS latency_ms_sum,
    maxState(units) AS units_max,
    maxState(request_bytes) AS request_bytes_max,
    maxState(response_bytes) AS response_bytes_max,
    maxState(latency_ms) AS latency_ms_max,
    uniqExactState(key_id) AS key_ids,
    maxState(toUInt8(key_id = '')) AS keyless
FROM usage_events
WHERE refusal = '' AND status < 500
GROUP BY bucket, subject, api_id, method, status_class;

-- When the view began: rows inserted into usage_events before it are not in
-- usage_billing_hour, so readers use the roll-up only for hours that start
-- well after the earliest row here (metering.BillingRollupFrom). Written
-- after the view exists, so it is never earlier than the view; a run that
-- repeats this file adds a later row, and readers take the minimum. A
-- MergeTree, not a Log table: concurrent migrator runs may both insert.
CREATE TABLE IF NOT EXISTS usage_billing_since
(
    began DateTime
)
ENGINE = MergeTree()
ORDER BY began;

INSERT INTO usage_billing_since SELECT now();
