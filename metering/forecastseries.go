package metering

// Meter values per interval of a subscription's usage, in one query per
// source, for the projection's daily history (MeterSeries) and for costs
// by day (MeterTotalsAt). Whole hours are read from the billing roll-up
// where it serves (RollupServes, from BillingRollupFrom on, every
// interval bound a whole hour), the rest from usage_events. Unlike
// MeterTotalsRollupMany they do not re-read the hours
// usage_billing_suspect lists: a projection's history or a day's cost may
// miss the rows of such an hour, while what a period bills, its invoice
// and its preview, is counted exactly.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
)

// intervalOf is the interval a row falls in: how many interior bounds
// (%[1]s: seconds since 1970, written as numbers, computed here) are at
// or before its time (%[2]s).
const intervalOf = `toInt64(arrayCount(b -> b <= toUInt32(%[2]s), [%[1]s]))`

// intervalsRollupSQL is the frame of the roll-up part: the whole hours'
// states merged per interval, method and status class, then the meters'
// columns (rollupQuery.column) per interval.
const intervalsRollupSQL = `SELECT k,
    %[2]s
FROM (
    SELECT %[1]s AS k, method, status_class,
        countMerge(requests) AS n,
        sumMerge(units_sum) AS units_sum,
        sumMerge(request_bytes_sum) AS request_bytes_sum,
        sumMerge(response_bytes_sum) AS response_bytes_sum,
        sumMerge(latency_ms_sum) AS latency_ms_sum,
        maxMerge(units_max) AS units_max,
        maxMerge(request_bytes_max) AS request_bytes_max,
        maxMerge(response_bytes_max) AS response_bytes_max,
        maxMerge(latency_ms_max) AS latency_ms_max
    FROM usage_billing_hour
    WHERE subject = @subject
      AND bucket >= toDateTime(@from) AND bucket < toDateTime(@to)
    GROUP BY k, method, status_class
)
GROUP BY k`

// intervalsBaseSQL is the frame of the base-table part: the billable
// events' meter columns (meterColumn) per interval.
const intervalsBaseSQL = `SELECT %[1]s AS k,
    %[2]s
FROM usage_events
WHERE subject = @subject
  AND time >= toDateTime(@from) AND time < toDateTime(@to)
  AND refusal = ''
  AND status < 500
GROUP BY k`

// firstKeysSQL counts a unique_count meter's keys by the interval each
// was first seen in (%[1]s the interval of that time, %[2]s the meter's
// condition).
const firstKeysSQL = `SELECT %[1]s AS k, toDecimal128(count(), 0)
FROM (
    SELECT key_id, min(time) AS first
    FROM usage_events
    WHERE subject = @subject
      AND time >= toDateTime(@from) AND time < toDateTime(@to)
      AND refusal = ''
      AND status < 500
      AND key_id != '' AND %[2]s
    GROUP BY key_id
)
GROUP BY k`

// MaxSeriesDays bounds a series' length, and MaxIntervals the instants
// of MeterTotalsAt.
const (
	MaxSeriesDays = 366
	MaxIntervals  = 2000
)

// MeterSeries returns, per slug, the daily values of subject's count and
// sum meters over [to − days·24h, to), oldest first (day i covers
// [to − (days−i)·24h, to − (days−i−1)·24h)); from, when later than the
// first day's start, leaves out what came before it. Other aggregations
// are not in the answer: a day's max or distinct keys do not add up to
// the period's.
func MeterSeries(ctx context.Context, conn driver.Conn, subject string, meters []Meter, from, to time.Time, days int) (map[string][]decimal.Decimal, error) {
	if days <= 0 || days > MaxSeriesDays {
		return nil, fmt.Errorf("query meter series: %d days, want 1 to %d", days, MaxSeriesDays)
	}
	var summed []Meter
	for _, m := range meters {
		if m.Aggregation == AggCount || m.Aggregation == AggSum {
			summed = append(summed, m)
		}
	}
	if err := checkIntervalMeters(summed); err != nil {
		return nil, fmt.Errorf("query meter series: %w", err)
	}
	out := make(map[string][]decimal.Decimal, len(summed))
	for _, m := range summed {
		out[m.Slug] = make([]decimal.Decimal, days)
	}
	// Bounds of the days that end after from, each day's start cut at
	// from; skip is how many days end before it.
	origin := to.Add(-time.Duration(days) * day)
	skip := 0
	for skip < days && !origin.Add(time.Duration(skip+1)*day).After(from) {
		skip++
	}
	if skip == days || len(summed) == 0 {
		return out, nil
	}
	bounds := []time.Time{maxTime(from, origin.Add(time.Duration(skip)*day))}
	for d := skip + 1; d <= days; d++ {
		bounds = append(bounds, origin.Add(time.Duration(d)*day))
	}
	values, err := meterIntervals(ctx, conn, subject, summed, bounds)
	if err != nil {
		return nil, fmt.Errorf("query meter series: %w", err)
	}
	for _, m := range summed {
		copy(out[m.Slug][skip:], values[m.Slug])
	}
	return out, nil
}

// MeterTotalsAt returns subject's meter values over [from, at[i]) for
// each instant of at (ascending, none before from), in order: what
// MeterTotals answers for each window, in a query or two for all of them
// (sums and counts per interval added up, maxima carried, a key counted
// from the interval it was first seen in).
func MeterTotalsAt(ctx context.Context, conn driver.Conn, subject string, meters []Meter, from time.Time, at []time.Time) ([]map[string]decimal.Decimal, error) {
	if len(at) > MaxIntervals {
		return nil, fmt.Errorf("query meter totals at: %d instants, at most %d", len(at), MaxIntervals)
	}
	if err := checkIntervalMeters(meters); err != nil {
		return nil, fmt.Errorf("query meter totals at: %w", err)
	}
	out := make([]map[string]decimal.Decimal, len(at))
	for i := range out {
		out[i] = make(map[string]decimal.Decimal, len(meters))
		for _, m := range meters {
			out[i][m.Slug] = decimal.Zero
		}
	}
	bounds := []time.Time{from}
	for i, t := range at {
		if t.Before(bounds[len(bounds)-1]) {
			return nil, fmt.Errorf("query meter totals at: instant %d (%s) before the one it follows", i, t)
		}
		bounds = append(bounds, t)
	}
	if len(at) == 0 || !at[len(at)-1].After(from) || len(meters) == 0 {
		return out, nil
	}
	values, err := meterIntervals(ctx, conn, subject, meters, bounds)
	if err != nil {
		return nil, fmt.Errorf("query meter totals at: %w", err)
	}
	for _, m := range meters {
		acc := decimal.Zero
		for i, v := range values[m.Slug] {
			if m.Aggregation == AggMax {
				acc = decimal.Max(acc, v)
			} else {
				acc = acc.Add(v)
			}
			if m.Aggregation == AggUniqueCount {
				acc = decimal.Min(acc, decimal.NewFromInt(enforcement.MaxMeterSetMembers))
			}
			out[i][m.Slug] = acc
		}
	}
	return out, nil
}

// checkIntervalMeters refuses an invalid meter or a slug listed twice.
func checkIntervalMeters(meters []Meter) error {
	return checkMeters(MeterWindow{Meters: meters})
}

// meterIntervals returns each meter's value in each interval
// [bounds[k], bounds[k+1]); a unique_count meter's is the keys first seen
// in it.
func meterIntervals(ctx context.Context, conn driver.Conn, subject string, meters []Meter, bounds []time.Time) (map[string][]decimal.Decimal, error) {
	n := len(bounds) - 1
	out := make(map[string][]decimal.Decimal, len(meters))
	for _, m := range meters {
		out[m.Slug] = make([]decimal.Decimal, n)
	}
	interior := make([]string, 0, n)
	for _, b := range bounds[1:n] {
		interior = append(interior, strconv.FormatInt(unixSeconds(b), 10))
	}
	from, to := bounds[0], bounds[n]
	var served, base, keys []Meter
	for _, m := range meters {
		switch {
		case m.Aggregation == AggUniqueCount:
			keys = append(keys, m)
		case RollupServes(m) && wholeHours(bounds[1:n]):
			served = append(served, m)
		default:
			base = append(base, m)
		}
	}
	first, last := from, from
	if len(served) > 0 {
		since, ok, err := BillingRollupFrom(ctx, conn)
		if err != nil {
			return nil, err
		}
		if ok {
			first = minTimeOf(maxTime(since, ceilHour(unixSeconds(from))), to)
			last = maxTime(first, time.Unix(unixSeconds(to)/3600*3600, 0))
		}
	}
	parts := []intervalPart{
		{base, from, to, false}, {served, from, first, false}, {served, first, last, true}, {served, last, to, false},
	}
	for _, p := range parts {
		if len(p.meters) == 0 || !p.to.After(p.from) {
			continue
		}
		if err := p.read(ctx, conn, subject, interior, out); err != nil {
			return nil, err
		}
	}
	for _, m := range keys {
		if err := firstKeys(ctx, conn, subject, m, from, to, interior, out[m.Slug]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// wholeHours reports whether every bound is a whole hour, so that the
// roll-up's hours fall wholly in one interval.
func wholeHours(bounds []time.Time) bool {
	for _, b := range bounds {
		if unixSeconds(b)%3600 != 0 {
			return false
		}
	}
	return true
}

// intervalPart is the meters read from one source over [from, to).
type intervalPart struct {
	meters   []Meter
	from, to time.Time
	rollup   bool
}

// read adds the part's values per interval into out.
func (p intervalPart) read(ctx context.Context, conn driver.Conn, subject string, interior []string, out map[string][]decimal.Decimal) error {
	cols := make([]string, len(p.meters))
	var args []any
	size := len(intervalsRollupSQL) + len(subject)*2 + 12*len(interior) + 64
	rq := &rollupQuery{columns: map[string]int{}}
	for i, m := range p.meters {
		if p.rollup {
			// Meters of one definition share a column's parameters; the
			// expression is repeated, one column per meter.
			cols[i] = rq.cols[rq.column(m)]
			continue
		}
		col, a, n, err := meterColumn(fmt.Sprintf("m%d", i), m)
		if err != nil {
			return err
		}
		cols[i], args, size = col, append(args, a...), size+n
	}
	frame, timeCol := intervalsBaseSQL, "time"
	if p.rollup {
		frame, timeCol = intervalsRollupSQL, "bucket"
		args, size = append(args, rq.args...), size+rq.size
	}
	args = append(args, clickhouse.Named("subject", subject),
		clickhouse.Named("from", unixSeconds(p.from)), clickhouse.Named("to", unixSeconds(p.to)))
	text := fmt.Sprintf(frame, interval(interior, timeCol), strings.Join(cols, ",\n    "))
	return readIntervals(ctx, conn, text, size, args, func(k int, values []decimal.Decimal) {
		for i, m := range p.meters {
			if m.Aggregation == AggMax {
				out[m.Slug][k] = decimal.Max(out[m.Slug][k], values[i])
			} else {
				out[m.Slug][k] = out[m.Slug][k].Add(values[i])
			}
		}
	}, len(p.meters), len(out[p.meters[0].Slug]))
}

// firstKeys counts m's keys by the interval each was first seen in.
func firstKeys(ctx context.Context, conn driver.Conn, subject string, m Meter, from, to time.Time, interior []string, out []decimal.Decimal) error {
	cond, args, size, err := meterCondition("m0", m)
	if err != nil {
		return err
	}
	args = append(args, clickhouse.Named("subject", subject),
		clickhouse.Named("from", unixSeconds(from)), clickhouse.Named("to", unixSeconds(to)))
	text := fmt.Sprintf(firstKeysSQL, interval(interior, "first"), cond)
	return readIntervals(ctx, conn, text, size+len(firstKeysSQL)+12*len(interior)+len(subject)*2, args, func(k int, values []decimal.Decimal) {
		out[k] = out[k].Add(values[0])
	}, 1, len(out))
}

// meterCondition is the WHERE condition of m's filter, as meterColumn
// writes it into its aggregate.
func meterCondition(p string, m Meter) (cond string, args []any, size int, err error) {
	count := m
	count.Aggregation, count.Field = AggCount, ""
	col, args, size, err := meterColumn(p, count)
	if err != nil {
		return "", nil, 0, err
	}
	// toDecimal128(countIf(<cond>), 0)
	return strings.TrimSuffix(strings.TrimPrefix(col, "toDecimal128(countIf("), "), 0)"), args, size, nil
}

// interval is the interval expression of col.
func interval(interior []string, col string) string {
	if len(interior) == 0 {
		return "toInt64(0)"
	}
	return fmt.Sprintf(intervalOf, strings.Join(interior, ", "), col)
}

// readIntervals runs an interval query whose rows are an interval and
// cols decimals, and calls row for each interval within [0, n).
func readIntervals(ctx context.Context, conn driver.Conn, text string, size int, args []any,
	row func(k int, values []decimal.Decimal), cols, n int) error {
	if size > defaultMaxQuerySize/2 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_query_size": 2 * size}))
	}
	rows, err := conn.Query(ctx, text, args...)
	if err != nil {
		return fmt.Errorf("query intervals: %w", err)
	}
	defer rows.Close()
	var k int64
	values := make([]decimal.Decimal, cols)
	dest := append([]any{&k}, make([]any, cols)...)
	for i := range values {
		dest[i+1] = &values[i]
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("read intervals: %w", err)
		}
		if k >= 0 && k < int64(n) {
			row(int(k), values)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read intervals: %w", err)
	}
	return nil
}
