package metering

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Reader answers usage queries from the roll-up tables of the database the
// connection selects.
type Reader struct {
	conn driver.Conn
}

// NewReader returns a Reader over conn, which the caller owns and closes.
func NewReader(conn driver.Conn) *Reader {
	return &Reader{conn: conn}
}

// Usage returns the usage q asks for: one bucket per granularity step of the
// widened range, empty ones included, and the total. It refuses a bad query
// with an error wrapping ErrBadQuery before it reads anything.
//
// The counters of Total are the sums of the buckets; its quantiles come from
// a second read, so a row inserted between the two can show in the
// quantiles only.
func (r *Reader) Usage(ctx context.Context, q Query) (Report, error) {
	from, to, err := q.bounds()
	if err != nil {
		return Report{}, err
	}
	d := q.Granularity.Duration()
	rep := Report{
		Subject:     q.Subject,
		KeyID:       q.KeyID,
		From:        from,
		To:          to,
		Granularity: q.Granularity,
		Buckets:     make([]Bucket, int(to.Sub(from)/d)),
		Total:       Bucket{Start: from},
	}
	for i := range rep.Buckets {
		rep.Buckets[i].Start = from.Add(time.Duration(i) * d)
	}
	args := queryArgs(q, from, to)

	rows, err := r.conn.Query(ctx, bucketsSQL(q.Granularity, q.KeyID != ""), args...)
	if err != nil {
		return Report{}, fmt.Errorf("read usage buckets: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			b         Bucket
			quantiles []float64
		)
		if err := rows.Scan(&b.Start, &b.Requests, &b.Successful, &b.ClientErrors, &b.ServerErrors,
			&b.Units, &b.RequestBytes, &b.ResponseBytes, &quantiles); err != nil {
			return Report{}, fmt.Errorf("scan usage bucket: %w", err)
		}
		b.Start = b.Start.UTC()
		b.LatencyP50, b.LatencyP90, b.LatencyP99 = latencies(quantiles)
		// The roll-ups bucket in the server's time zone. On a server not in
		// UTC, hour or day buckets fall between ours: refuse to misplace
		// them.
		off := b.Start.Sub(from)
		if off < 0 || b.Start.Compare(to) >= 0 || off%d != 0 {
			return Report{}, fmt.Errorf("read usage buckets: bucket %s is not a %s of UTC in [%s, %s); is the ClickHouse server's time zone UTC?",
				b.Start.Format(time.RFC3339), q.Granularity, from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
		rep.Buckets[off/d] = b
		rep.Total.add(b)
	}
	if err := rows.Err(); err != nil {
		return Report{}, fmt.Errorf("read usage buckets: %w", err)
	}
	rows.Close()

	if rep.Total.Requests == 0 {
		return rep, nil
	}
	var quantiles []float64
	if err := r.conn.QueryRow(ctx, totalSQL(q.Granularity, q.KeyID != ""), args...).Scan(&quantiles); err != nil {
		return Report{}, fmt.Errorf("read usage total: %w", err)
	}
	rep.Total.LatencyP50, rep.Total.LatencyP90, rep.Total.LatencyP99 = latencies(quantiles)
	return rep, nil
}

// queryArgs returns the positional parameters of bucketsSQL and totalSQL.
func queryArgs(q Query, from, to time.Time) []any {
	args := []any{q.Subject, from, to}
	if q.KeyID != "" {
		args = append(args, q.KeyID)
	}
	return args
}

// latencies returns p50, p90 and p99 from quantilesMerge(0.5, 0.9, 0.99).
// Newer ClickHouse releases answer NaN for an empty state, which JSON cannot
// carry; it means no requests, so 0.
func latencies(q []float64) (p50, p90, p99 float64) {
	if len(q) != 3 {
		return 0, 0, 0
	}
	for i, v := range q {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			q[i] = 0
		}
	}
	return q[0], q[1], q[2]
}

// The SQL is written for ClickHouse 18.16 and current releases alike:
//   - Aliases never repeat a column name that another expression reads:
//     18.16 substitutes the alias inside the aggregate and fails.
//   - The day roll-up's bucket is a Date, which 18.16 compares with a
//     DateTime as raw numbers (days against seconds), so its bounds go
//     through toDate.
//   - quantilesMerge returns UInt32 on 18.16 and Float64 on newer releases;
//     arrayMap makes both Array(Float64).
//   - Status classes come from intDiv(status, 100): 1 to 3 succeeded, 4 and
//     5 failed; anything else counts in the requests only.
const latencySQL = `arrayMap(x -> toFloat64(x), quantilesMerge(0.5, 0.9, 0.99)(latency_ms)) AS latency_quantiles`

// bucketsSQL selects one row per bucket with usage, in order. Parameters:
// subject, from, to (time.Time in UTC), and key_id when byKey.
func bucketsSQL(g Granularity, byKey bool) string {
	return `SELECT
    bucket AS bucket_start,
    countMerge(requests) AS n_requests,
    countMergeIf(requests, status_class >= 1 AND status_class <= 3) AS n_successful,
    countMergeIf(requests, status_class = 4) AS n_client_errors,
    countMergeIf(requests, status_class = 5) AS n_server_errors,
    sumMerge(units) AS sum_units,
    sumMerge(request_bytes) AS sum_request_bytes,
    sumMerge(response_bytes) AS sum_response_bytes,
    ` + latencySQL + `
` + fromWhereSQL(g, byKey) + `
GROUP BY bucket_start
ORDER BY bucket_start`
}

// totalSQL selects the latency quantiles merged over the whole range: one
// row, or none without usage. Parameters as bucketsSQL.
func totalSQL(g Granularity, byKey bool) string {
	return `SELECT
    ` + latencySQL + `
` + fromWhereSQL(g, byKey) + `
GROUP BY subject`
}

func fromWhereSQL(g Granularity, byKey bool) string {
	bound := "?"
	if g == Day {
		bound = "toDate(?)"
	}
	var b strings.Builder
	b.WriteString("FROM usage_rollup_" + string(g) + "\n")
	b.WriteString("WHERE subject = ?\n")
	b.WriteString("  AND bucket >= " + bound + "\n")
	b.WriteString("  AND bucket < " + bound)
	if byKey {
		b.WriteString("\n  AND key_id = ?")
	}
	return b.String()
}
