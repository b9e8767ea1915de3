package metering

// The daily history a projection reads (MeterSeries): count and sum
// meters per day, from the billing roll-up's hours where it serves
// (RollupServes, from BillingRollupFrom on) and from usage_events for the
// rest (route filters, hours before the roll-up began). Unlike
// MeterTotalsRollupMany it does not re-read the hours usage_billing_suspect
// lists: a projection's history may miss the rows of such an hour, while
// what the period used, which the invoice bills, is counted exactly.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
)

// seriesRollupSQL is the frame of the roll-up part: each whole hour's
// states merged per method and status class, then the meters' columns
// (rollupQuery.column) per day since @origin.
const seriesRollupSQL = `SELECT toInt64(intDiv(toInt64(toUInt32(bucket)) - @origin, 86400)) AS d,
    %s
FROM (
    SELECT bucket, method, status_class,
        countMerge(requests) AS n,
        sumMerge(units_sum) AS units_sum,
        sumMerge(request_bytes_sum) AS request_bytes_sum,
        sumMerge(response_bytes_sum) AS response_bytes_sum,
        sumMerge(latency_ms_sum) AS latency_ms_sum
    FROM usage_billing_hour
    WHERE subject = @subject
      AND bucket >= toDateTime(@from) AND bucket < toDateTime(@to)
    GROUP BY bucket, method, status_class
)
GROUP BY d`

// seriesBaseSQL is the frame of the base-table part: the billable events'
// meter columns (meterColumn) per day since @origin.
const seriesBaseSQL = `SELECT toInt64(intDiv(toInt64(toUInt32(time)) - @origin, 86400)) AS d,
    %s
FROM usage_events
WHERE subject = @subject
  AND time >= toDateTime(@from) AND time < toDateTime(@to)
  AND refusal = ''
  AND status < 500
GROUP BY d`

// MaxSeriesDays bounds a series' length.
const MaxSeriesDays = 366

// MeterSeries returns, per slug, the daily values of subject's count and
// sum meters over [to − days·24h, to), oldest first (day i covers
// [to − (days−i)·24h, to − (days−i−1)·24h)); from, when later than the
// first day's start, leaves out what came before it. Other aggregations
// are not in the answer: a day's max or distinct keys do not add up to
// the period's. to should be a whole hour for the roll-up to serve it all.
func MeterSeries(ctx context.Context, conn driver.Conn, subject string, meters []Meter, from, to time.Time, days int) (map[string][]decimal.Decimal, error) {
	if days <= 0 || days > MaxSeriesDays {
		return nil, fmt.Errorf("query meter series: %d days, want 1 to %d", days, MaxSeriesDays)
	}
	origin := to.Add(-time.Duration(days) * day)
	from = maxTime(from, origin)
	out := make(map[string][]decimal.Decimal)
	var served, base []Meter
	for _, m := range meters {
		if m.Aggregation != AggCount && m.Aggregation != AggSum {
			continue
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("query meter series: %w", err)
		}
		if _, dup := out[m.Slug]; dup {
			return nil, fmt.Errorf("query meter series: %w: slug: %q is listed twice", ErrInvalidMeter, m.Slug)
		}
		out[m.Slug] = make([]decimal.Decimal, days)
		if RollupServes(m) {
			served = append(served, m)
		} else {
			base = append(base, m)
		}
	}
	if !to.After(from) || len(out) == 0 {
		return out, nil
	}
	split := from
	if len(served) > 0 {
		since, ok, err := BillingRollupFrom(ctx, conn)
		if err != nil {
			return nil, err
		}
		if ok {
			split = minTimeOf(maxTime(since, ceilHour(unixSeconds(from))), to)
		}
	}
	add := func(ms []Meter, values [][]decimal.Decimal) {
		for j, m := range ms {
			for d, v := range values[j] {
				out[m.Slug][d] = out[m.Slug][d].Add(v)
			}
		}
	}
	parts := []struct {
		ms       []Meter
		from, to time.Time
		rollup   bool
	}{{base, from, to, false}, {served, from, split, false}, {served, split, to, true}}
	for _, p := range parts {
		if len(p.ms) == 0 || !p.to.After(p.from) {
			continue
		}
		values, err := seriesPart(ctx, conn, subject, p.ms, origin, p.from, p.to, days, p.rollup)
		if err != nil {
			return nil, err
		}
		add(p.ms, values)
	}
	return out, nil
}

// seriesPart runs one part of MeterSeries: ms over [from, to) per day
// since origin, from the roll-up or the base table.
func seriesPart(ctx context.Context, conn driver.Conn, subject string, ms []Meter, origin, from, to time.Time, days int, rollup bool) ([][]decimal.Decimal, error) {
	cols := make([]string, len(ms))
	var args []any
	size := len(seriesRollupSQL) + len(subject)*2 + 64
	rq := &rollupQuery{columns: map[string]int{}}
	for i, m := range ms {
		if rollup {
			// Meters of one definition share a column's parameters; the
			// expression is repeated, one column per meter.
			cols[i] = rq.cols[rq.column(m)]
			continue
		}
		col, a, n, err := meterColumn(fmt.Sprintf("m%d", i), m)
		if err != nil {
			return nil, fmt.Errorf("query meter series: %w", err)
		}
		cols[i], args, size = col, append(args, a...), size+n
	}
	frame := seriesBaseSQL
	if rollup {
		frame = seriesRollupSQL
		args, size = append(args, rq.args...), size+rq.size
	}
	args = append(args, clickhouse.Named("subject", subject), clickhouse.Named("origin", unixSeconds(origin)),
		clickhouse.Named("from", unixSeconds(from)), clickhouse.Named("to", unixSeconds(to)))
	text := fmt.Sprintf(frame, strings.Join(cols, ",\n    "))
	if size > defaultMaxQuerySize/2 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_query_size": 2 * size}))
	}
	rows, err := conn.Query(ctx, text, args...)
	if err != nil {
		return nil, fmt.Errorf("query meter series: %w", err)
	}
	defer rows.Close()
	out := make([][]decimal.Decimal, len(ms))
	for i := range out {
		out[i] = make([]decimal.Decimal, days)
	}
	var d int64
	values := make([]decimal.Decimal, len(ms))
	dest := append([]any{&d}, make([]any, len(ms))...)
	for i := range values {
		dest[i+1] = &values[i]
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read meter series: %w", err)
		}
		if d < 0 || d >= int64(days) {
			continue
		}
		for i, v := range values {
			out[i][d] = v
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read meter series: %w", err)
	}
	return out, nil
}
