package metering

// Analyst queries over the ClickHouse usage tables (schemas/clickhouse).
//
// Each constant is one query, written for clickhouse-go v2 with named
// parameters (@name, bound client-side with clickhouse.Named) and unqualified
// table names: the connection selects the database (veil in production). They
// are tested on ClickHouse 18.16 and use nothing that current releases lack.
// docs/analyst-sql.md shows
// each one with literal values for clickhouse-client, together with measured
// latencies; TestDocsShowTheQueries keeps the two in step.
//
// Conventions shared by every query:
//
//   - Ranges are half-open, [@from, @to). Pass time.Time values in UTC:
//     buckets are in the server's time zone (UTC on our servers), while a
//     bound time.Time keeps its own location.
//   - Day buckets are Date columns, so the day queries compare them with
//     toDate(@from): ClickHouse 18.16 compares a Date with a DateTime as raw
//     numbers (days against seconds) and silently returns nothing.
//   - Roll-ups are AggregatingMergeTree tables: always read them through the
//     -Merge functions and a GROUP BY, never by reading the state columns.
//   - No alias repeats the name of a column that another expression in the
//     same SELECT reads: 18.16 substitutes the alias inside the aggregate and
//     fails with "aggregate function found inside another aggregate function".
//     Queries that need per-status-class counts merge them in an inner query.
//   - Latency quantiles come from quantilesMerge(0.5, 0.9, 0.99): reservoir
//     samples (exact up to 8,192 requests per group, approximate above).
//     18.16 returns them as UInt32 (truncated to whole milliseconds), newer
//     releases as Float64; the queries convert them to Float64.
//   - 4xx includes the gateway's own refusals (401, 403, 429), and 5xx its
//     503 when it cannot check keys. Only usage_events tells them apart
//     (refusal <> ''); the roll-ups do not, so their request counts include
//     refusals. Their unit sums stay billable
//     because the gateway sends refusals with units 0; billing itself should
//     still read usage_events WHERE refusal = '' rather than rely on that.

// DailyUsageBySubscription answers "how much did this subscription use each
// day?": requests and billable units per day for one subscription, from
// usage_rollup_day. The roll-up's sorting key starts with subject, so this
// reads only that subscription's rows.
//
// Parameters: @subject (string), @from and @to (time.Time in UTC, cut to their
// day: days from toDate(@from) up to, not including, toDate(@to)).
//
// Columns: subject String, day Date (time.Time), requests UInt64,
// units Decimal(38, 6) (decimal.Decimal). Ordered by day; days without usage
// are absent.
const DailyUsageBySubscription = `SELECT
    subject,
    bucket AS day,
    countMerge(requests) AS requests,
    sumMerge(units) AS units
FROM usage_rollup_day
WHERE subject = @subject
  AND bucket >= toDate(@from)
  AND bucket < toDate(@to)
GROUP BY subject, day
ORDER BY subject, day`

// TopRoutesByAPI answers "which endpoints of this API are busiest, and how
// often do they fail?": requests per (method, route) of one API over a range,
// with the 4xx and 5xx counts and the error rate (share of requests with a
// status of 400 or more), busiest first, from usage_rollup_hour.
//
// Parameters: @api_id (string), @from and @to (time.Time; hour buckets, so
// whole hours), @limit (int).
//
// Columns: method String, route String, requests UInt64, errors_4xx UInt64,
// errors_5xx UInt64, error_rate Float64 (0..1). Ties are broken by method and
// route.
const TopRoutesByAPI = `SELECT
    method,
    route,
    sum(n) AS requests,
    sumIf(n, status_class = 4) AS errors_4xx,
    sumIf(n, status_class = 5) AS errors_5xx,
    (errors_4xx + errors_5xx) / requests AS error_rate
FROM
(
    SELECT method, route, status_class, countMerge(requests) AS n
    FROM usage_rollup_hour
    WHERE api_id = @api_id
      AND bucket >= @from
      AND bucket < @to
    GROUP BY method, route, status_class
)
GROUP BY method, route
ORDER BY requests DESC, method, route
LIMIT @limit`

// ErrorRatesByAPIHourly answers "which APIs are failing, and when?": for
// every API and hour of a range, the requests, the 4xx and 5xx counts and
// their shares of the requests, from usage_rollup_hour.
//
// Parameters: @from and @to (time.Time; whole hours).
//
// Columns: api_id String, hour DateTime (time.Time), requests UInt64,
// errors_4xx UInt64, errors_5xx UInt64, rate_4xx Float64, rate_5xx Float64.
// Ordered by API, then hour; hours without requests are absent.
const ErrorRatesByAPIHourly = `SELECT
    api_id,
    hour,
    sum(n) AS requests,
    sumIf(n, status_class = 4) AS errors_4xx,
    sumIf(n, status_class = 5) AS errors_5xx,
    errors_4xx / requests AS rate_4xx,
    errors_5xx / requests AS rate_5xx
FROM
(
    SELECT api_id, bucket AS hour, status_class, countMerge(requests) AS n
    FROM usage_rollup_hour
    WHERE bucket >= @from
      AND bucket < @to
    GROUP BY api_id, hour, status_class
)
GROUP BY api_id, hour
ORDER BY api_id, hour`

// LatencyByAPIDaily answers "how fast is each API, day by day?": requests
// and the median and 99th-percentile latency in milliseconds per API and day,
// from usage_rollup_day. Latency is the gateway's measure of the whole call,
// refusals included.
//
// Parameters: @from and @to (time.Time in UTC, cut to their day, as in
// DailyUsageBySubscription).
//
// Columns: api_id String, day Date (time.Time), requests UInt64,
// p50_ms Float64, p99_ms Float64. Ordered by API, then day.
const LatencyByAPIDaily = `SELECT
    api_id,
    bucket AS day,
    countMerge(requests) AS requests,
    toFloat64(quantilesMerge(0.5, 0.9, 0.99)(latency_ms)[1]) AS p50_ms,
    toFloat64(quantilesMerge(0.5, 0.9, 0.99)(latency_ms)[3]) AS p99_ms
FROM usage_rollup_day
WHERE bucket >= toDate(@from)
  AND bucket < toDate(@to)
GROUP BY api_id, day
ORDER BY api_id, day`

// KeyActivityBySubscription answers "which keys and paths did this
// subscription use?" from the raw usage_events table, because the roll-ups
// keep neither paths nor single requests: per key of one subscription, the
// requests, the exact number of distinct paths, the first and last request
// and the slowest latency. The table's sorting key starts with (subject,
// time), so this reads only that subscription's rows in the range.
//
// Parameters: @subject (string), @from and @to (time.Time, to the second).
//
// Columns: key_id String, requests UInt64, distinct_paths UInt64,
// first_seen DateTime, last_seen DateTime (time.Time), max_latency_ms UInt32.
// Busiest key first, ties by key_id.
const KeyActivityBySubscription = `SELECT
    key_id,
    count() AS requests,
    uniqExact(path) AS distinct_paths,
    min(time) AS first_seen,
    max(time) AS last_seen,
    max(latency_ms) AS max_latency_ms
FROM usage_events
WHERE subject = @subject
  AND time >= @from
  AND time < @to
GROUP BY key_id
ORDER BY requests DESC, key_id`

// The queries below read the roll-ups by API (ClickHouse migration 0006):
// usage_api_hour and usage_api_day (per API, route, method and status
// class, latency as a quantilesTiming state) and usage_api_consumer_hour and
// usage_api_consumer_day (per API and subject). Their sorting keys start
// with (api_id, bucket), so a question about one API reads only its rows;
// their buckets are UTC hours and days. Read latency with
// quantilesTimingMerge(0.5, 0.9, 0.99).

// APIDailyUsage answers "how much was this API used each day, and how
// often did it fail?": requests, upstream failures (status class 5) and
// billable units per UTC day of one API, from usage_api_day.
//
// Parameters: @api_id (string), @from and @to (time.Time in UTC, cut to
// their day).
//
// Columns: day Date (time.Time), requests UInt64, errors_5xx UInt64, units
// Decimal(38, 6). Ordered by day; days without usage are absent.
const APIDailyUsage = `SELECT
    day,
    sum(n) AS requests,
    sumIf(n, status_class = 5) AS errors_5xx,
    sum(u) AS units
FROM
(
    SELECT bucket AS day, status_class, countMerge(requests) AS n, sumMerge(units) AS u
    FROM usage_api_day
    WHERE api_id = @api_id
      AND bucket >= toDate(@from)
      AND bucket < toDate(@to)
    GROUP BY day, status_class
)
GROUP BY day
ORDER BY day`

// APITopRoutes answers "which endpoints of this API are busiest, and how
// often do they fail?" from usage_api_hour: the same answer as
// TopRoutesByAPI, reading only that API's rows.
//
// Parameters: @api_id (string), @from and @to (time.Time in UTC, whole
// hours), @limit (int).
//
// Columns: method String, route String, requests UInt64, errors_4xx UInt64,
// errors_5xx UInt64, error_rate Float64 (0..1). Ties by method and route.
const APITopRoutes = `SELECT
    method,
    route,
    sum(n) AS requests,
    sumIf(n, status_class = 4) AS errors_4xx,
    sumIf(n, status_class = 5) AS errors_5xx,
    (errors_4xx + errors_5xx) / requests AS error_rate
FROM
(
    SELECT method, route, status_class, countMerge(requests) AS n
    FROM usage_api_hour
    WHERE api_id = @api_id
      AND bucket >= @from
      AND bucket < @to
    GROUP BY method, route, status_class
)
GROUP BY method, route
ORDER BY requests DESC, method, route
LIMIT @limit`

// APILatencyDaily answers "how fast is each API, day by day?" from
// usage_api_day: requests and the p50, p90 and p99 latency in milliseconds
// (quantilesTiming: exact below 1,024 ms, in 16 ms steps above), for
// every API.
//
// Parameters: @from and @to (time.Time in UTC, cut to their day).
//
// Columns: api_id String, day Date (time.Time), requests UInt64, p50_ms,
// p90_ms, p99_ms Float64. Ordered by API and day.
const APILatencyDaily = `SELECT
    api_id,
    bucket AS day,
    countMerge(requests) AS requests,
    toFloat64(quantilesTimingMerge(0.5, 0.9, 0.99)(latency_ms)[1]) AS p50_ms,
    toFloat64(quantilesTimingMerge(0.5, 0.9, 0.99)(latency_ms)[2]) AS p90_ms,
    toFloat64(quantilesTimingMerge(0.5, 0.9, 0.99)(latency_ms)[3]) AS p99_ms
FROM usage_api_day
WHERE bucket >= toDate(@from)
  AND bucket < toDate(@to)
GROUP BY api_id, day
ORDER BY api_id, day`

// APITopConsumers answers "who uses this API most?": requests and billable
// units per subject (subscription) of one API, from usage_api_consumer_day.
//
// Parameters: @api_id (string), @from and @to (time.Time in UTC, cut to
// their day), @limit (int).
//
// Columns: subject String, requests UInt64, units Decimal(38, 6). Busiest
// first, ties by subject.
const APITopConsumers = `SELECT
    subject,
    countMerge(requests) AS requests,
    sumMerge(units) AS units
FROM usage_api_consumer_day
WHERE api_id = @api_id
  AND bucket >= toDate(@from)
  AND bucket < toDate(@to)
GROUP BY subject
ORDER BY requests DESC, subject
LIMIT @limit`

// APIUniqueConsumers answers "how many subscriptions used each API?": the
// exact number of distinct subjects with at least one request per API, from
// usage_api_consumer_day.
//
// Parameters: @from and @to (time.Time in UTC, cut to their day).
//
// Columns: api_id String, consumers UInt64. Ordered by API.
const APIUniqueConsumers = `SELECT
    api_id,
    uniqExact(subject) AS consumers
FROM usage_api_consumer_day
WHERE bucket >= toDate(@from)
  AND bucket < toDate(@to)
GROUP BY api_id
ORDER BY api_id`
