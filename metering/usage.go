package metering

import (
	"errors"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
)

// MaxBuckets is the most buckets one query may ask for: enough for a day by
// minute, six weeks by hour or almost three years by day, and small enough
// that a report stays a cheap read and a readable chart.
const MaxBuckets = 1000

// ErrBadQuery is wrapped by every error that refuses a Query: the caller
// asked for something that cannot be answered, so retrying will not help.
var ErrBadQuery = errors.New("bad usage query")

// Granularity is the width of a report's buckets.
type Granularity string

// The granularities, one per roll-up table (usage_rollup_minute, _hour and
// _day).
const (
	Minute Granularity = "minute"
	Hour   Granularity = "hour"
	Day    Granularity = "day"
)

// Valid reports whether g is one of Minute, Hour and Day.
func (g Granularity) Valid() bool { return g.Duration() > 0 }

// Duration returns the width of one bucket, or 0 for an unknown granularity.
func (g Granularity) Duration() time.Duration {
	switch g {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	}
	return 0
}

// Query asks for one subscription's usage over a range.
type Query struct {
	// Subject is the subscription id. Required.
	Subject string
	// KeyID restricts the report to one API key; empty means every key of
	// the subscription.
	KeyID string
	// From and To bound the range, [From, To). From is truncated down and To
	// rounded up to the granularity, in UTC, so the report covers whole
	// buckets.
	From, To time.Time
	// Granularity is the bucket width.
	Granularity Granularity
}

// Validate returns an error wrapping ErrBadQuery when q cannot be answered:
// no subject, an unknown granularity, From not before To, or more than
// MaxBuckets buckets.
func (q Query) Validate() error {
	_, _, err := q.bounds()
	return err
}

// bounds returns the range the report covers: From truncated down and To
// rounded up to whole buckets, in UTC.
func (q Query) bounds() (from, to time.Time, err error) {
	switch {
	case q.Subject == "":
		return from, to, fmt.Errorf("%w: subject is required", ErrBadQuery)
	case !q.Granularity.Valid():
		return from, to, fmt.Errorf("%w: granularity %q is not one of minute, hour, day", ErrBadQuery, q.Granularity)
	case q.From.IsZero() || q.To.IsZero():
		return from, to, fmt.Errorf("%w: from and to are required", ErrBadQuery)
	case !q.From.Before(q.To):
		return from, to, fmt.Errorf("%w: from %s is not before to %s", ErrBadQuery,
			q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339))
	}
	d := q.Granularity.Duration()
	// Truncate counts from the zero time, which is midnight UTC, so whole
	// minutes, hours and days of UTC are exactly the roll-ups' buckets.
	from = q.From.UTC().Truncate(d)
	to = q.To.UTC().Truncate(d)
	if to.Before(q.To) {
		to = to.Add(d)
	}
	// Sub saturates for ranges beyond ~292 years, which still counts as too
	// many buckets.
	if n := to.Sub(from) / d; n > MaxBuckets {
		return from, to, fmt.Errorf("%w: %s to %s by %s is %d buckets; at most %d", ErrBadQuery,
			from.Format(time.RFC3339), to.Format(time.RFC3339), q.Granularity, n, MaxBuckets)
	}
	return from, to, nil
}

// Bucket is the usage in one bucket, or over the whole report (Total).
type Bucket struct {
	// Start is the bucket's first instant, in UTC.
	Start time.Time `json:"start"`
	// Requests counts every request, whatever its status.
	Requests uint64 `json:"requests"`
	// Successful counts requests answered 1xx to 3xx.
	Successful uint64 `json:"successful_requests"`
	// ClientErrors counts 4xx answers, the gateway's own refusals (401, 403,
	// 429) included.
	ClientErrors uint64 `json:"client_error_requests"`
	// ServerErrors counts 5xx answers.
	ServerErrors uint64 `json:"server_error_requests"`
	// Units is the sum of the billable units, exact to 6 decimals.
	Units         decimal.Decimal `json:"units"`
	RequestBytes  uint64          `json:"request_bytes"`
	ResponseBytes uint64          `json:"response_bytes"`
	// The latency quantiles in milliseconds, 0 when there were no requests.
	// They are exact up to 8,192 requests per roll-up row and estimates
	// above; ClickHouse 18.16 truncates them to whole milliseconds.
	LatencyP50 float64 `json:"latency_ms_p50"`
	LatencyP90 float64 `json:"latency_ms_p90"`
	LatencyP99 float64 `json:"latency_ms_p99"`
}

// add adds b's counters to t. Quantiles do not add up: the caller merges
// them in ClickHouse.
func (t *Bucket) add(b Bucket) {
	t.Requests += b.Requests
	t.Successful += b.Successful
	t.ClientErrors += b.ClientErrors
	t.ServerErrors += b.ServerErrors
	t.Units = t.Units.Add(b.Units)
	t.RequestBytes += b.RequestBytes
	t.ResponseBytes += b.ResponseBytes
}

// Report is the usage a Query asked for.
type Report struct {
	Subject string `json:"subject"`
	// KeyID is the key the report is restricted to; empty for every key.
	KeyID string `json:"key_id"`
	// From and To are the range covered, [From, To), widened to whole
	// buckets.
	From        time.Time   `json:"from"`
	To          time.Time   `json:"to"`
	Granularity Granularity `json:"granularity"`
	// Buckets holds every bucket of the range in order, those without usage
	// included with zeros, so a chart has no gaps.
	Buckets []Bucket `json:"buckets"`
	// Total sums the buckets; its Start is From and its latency quantiles
	// are merged over the whole range, not averaged.
	Total Bucket `json:"total"`
}
