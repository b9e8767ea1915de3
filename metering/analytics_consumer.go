package metering

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"
)

// MaxAnalyticsRoutes is the most routes an analytics answer lists, the
// busiest first, so that an API with very many route templates still
// answers a bounded number of rows.
const MaxAnalyticsRoutes = 500

// MaxRawAnalyticsWindow is the longest window read from usage_events
// alone; longer ones are read from the roll-ups. Merging the roll-ups'
// quantile states costs far more per row than reading a raw row (a
// reservoir is deserialized for each), and for one subscription the
// hour roll-up holds nearly a row per event (docs/analyst-sql.md): over
// 30 days of a subscription with 200,000 calls, the hour roll-up's
// latency merge took 400 to 640 ms where usage_events gave every figure in
// 20 to 85 ms (BenchmarkAnalytics). Beyond a month, the day roll-up's
// fewer rows per event win back.
const MaxRawAnalyticsWindow = 31 * 24 * time.Hour

// rawAnalyticsWindow is MaxRawAnalyticsWindow; tests move it to read a
// short window from the roll-ups.
var rawAnalyticsWindow = MaxRawAnalyticsWindow

// AnalyticsTimeout bounds an analytics query: the driver passes a
// context's deadline to ClickHouse as max_execution_time, so the server
// stops the query too, not only the client waiting for it.
const AnalyticsTimeout = 30 * time.Second

// MaxAnalyticsDays is the most days an analytics window may span (cuts
// plus one).
const MaxAnalyticsDays = 402

// AnalyticsQuery asks for one subscription's analytics, cut into days.
type AnalyticsQuery struct {
	// Subject is the subscription id. Required.
	Subject string
	// KeyID restricts the answer to one key; empty for every key.
	KeyID string
	// From and To bound the window, [From, To); fractions of a second
	// are rounded up, as events carry whole seconds.
	From, To time.Time
	// DayStarts are the instants, ascending and strictly inside the
	// window, where a new day begins in the caller's time zone. Day 0
	// runs from From to the first of them, day i from DayStarts[i-1].
	DayStarts []time.Time
}

// Stats is what one group of calls amounts to.
type Stats struct {
	Calls uint64
	// ServerErrors counts status class 5, ClientErrors class 4 (the
	// gateway's refusals included).
	ServerErrors, ClientErrors uint64
	Units                      decimal.Decimal
	// P50, P90 and P99 are latency quantiles in milliseconds, merged from
	// the roll-ups' quantile states (exact up to 8,192 calls per roll-up
	// row, sampled beyond); 0 without calls.
	P50, P90, P99 float64
}

// RouteStats is a route's share of the calls.
type RouteStats struct {
	Method, Route string
	Stats
}

// StatusClassCount counts the calls of one status class (2 for 2xx, …).
type StatusClassCount struct {
	Class uint8
	Calls uint64
}

// Analytics answers an AnalyticsQuery.
type Analytics struct {
	Total Stats
	// Days has one entry per day of the window, len(DayStarts)+1.
	Days []Stats
	// Routes are the busiest first, at most MaxAnalyticsRoutes of them;
	// RoutesTruncated says that there were more.
	Routes          []RouteStats
	RoutesTruncated bool
	// StatusClasses in ascending order of class.
	StatusClasses []StatusClassCount
}

// What a row of the analytics query is about (its first column).
const (
	kindDay   = 1
	kindRoute = 2
	kindTotal = 3
	kindClass = 4
)

// Analytics reads q in one query. It refuses a bad query with an error
// wrapping ErrBadQuery before it reads anything.
func (r *Reader) Analytics(ctx context.Context, q AnalyticsQuery) (Analytics, error) {
	from, to := ceilSecond(q.From), ceilSecond(q.To)
	switch {
	case q.Subject == "":
		return Analytics{}, fmt.Errorf("%w: subject is required", ErrBadQuery)
	case !from.Before(to):
		return Analytics{}, fmt.Errorf("%w: from is not before to", ErrBadQuery)
	case len(q.DayStarts)+1 > MaxAnalyticsDays:
		return Analytics{}, fmt.Errorf("%w: %d days; at most %d", ErrBadQuery, len(q.DayStarts)+1, MaxAnalyticsDays)
	}
	cuts := make([]time.Time, len(q.DayStarts))
	for i, c := range q.DayStarts {
		cuts[i] = ceilSecond(c)
		if !cuts[i].After(from) || !cuts[i].Before(to) || (i > 0 && !cuts[i].After(cuts[i-1])) {
			return Analytics{}, fmt.Errorf("%w: day starts must ascend strictly inside the window", ErrBadQuery)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, AnalyticsTimeout)
	defer cancel()
	out := Analytics{Days: make([]Stats, len(cuts)+1)}
	args := []any{clickhouse.Named("subject", q.Subject), clickhouse.Named("key_id", q.KeyID)}
	plan, timing := planPieces(from, to, cuts), false
	if to.Sub(from) <= rawAnalyticsWindow {
		plan, timing = piecePlan{tableRaw: {{from, to}}}, true
	}
	rows, err := r.conn.Query(ctx, analyticsSQL(plan, cuts, q.KeyID != "", timing), args...)
	if err != nil {
		return Analytics{}, fmt.Errorf("read analytics: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			kind, class   uint8
			day           uint32
			method, route string
			s             Stats
			lat           []float64
		)
		if err := rows.Scan(&kind, &day, &method, &route, &class, &s.Calls, &s.ServerErrors, &s.ClientErrors, &s.Units, &lat); err != nil {
			return Analytics{}, fmt.Errorf("scan analytics: %w", err)
		}
		s.P50, s.P90, s.P99 = latencies(lat)
		switch kind {
		case kindDay:
			if int(day) >= len(out.Days) {
				return Analytics{}, fmt.Errorf("read analytics: day %d outside the window", day)
			}
			out.Days[day] = s
		case kindRoute:
			if len(out.Routes) == MaxAnalyticsRoutes {
				out.RoutesTruncated = true
				continue
			}
			out.Routes = append(out.Routes, RouteStats{Method: method, Route: route, Stats: s})
		case kindTotal:
			out.Total = s
		case kindClass:
			out.StatusClasses = append(out.StatusClasses, StatusClassCount{Class: class, Calls: s.Calls})
		}
	}
	if err := rows.Err(); err != nil {
		return Analytics{}, fmt.Errorf("read analytics: %w", err)
	}
	return out, nil
}

// ceilSecond rounds t up to a whole second, in UTC: an event at second s
// is at or after t exactly when s is at or after ceilSecond(t).
func ceilSecond(t time.Time) time.Time {
	t = t.UTC()
	if c := t.Truncate(time.Second); c.Before(t) {
		return c.Add(time.Second)
	}
	return t
}

// analyticsSQL reads every piece of p with the day its bucket falls in,
// then groups the union four ways at once (ARRAY JOIN over grouping
// tuples: by day, by route, the total, by status class), so that each
// roll-up row's quantile state is read once and merged per group, in one
// round trip. Rows per kind are bounded: days by the window, routes by the
// LIMIT BY (one more than kept, to tell truncation), classes by the status
// codes. Parameters: @subject, @key_id.
//
// The inner aliases (n, u, q, day_index) repeat no column that another
// expression reads: ClickHouse 18.16 substitutes an alias into the
// aggregates that read the same name.
//
// With timing, the plan is usage_events alone and latency is
// quantilesTiming (deterministic: exact up to 5,670 calls per group,
// beyond that to the millisecond below 1,024 ms and to 16 ms above, 30 s
// at most); without, the roll-ups' reservoir states are merged.
func analyticsSQL(p piecePlan, cuts []time.Time, byKey, timing bool) string {
	var pieces []string
	for t := range p {
		if len(p[t]) > 0 {
			pieces = append(pieces, pieceSQL(rollupTable(t), &p, cuts, byKey, timing))
		}
	}
	quantiles := "quantilesMergeIf"
	if timing {
		quantiles = "quantilesTimingMergeIf"
	}
	return `SELECT
    g.1 AS kind, g.2 AS day_i, g.3 AS m, g.4 AS r, g.5 AS cls,
    countMerge(n) AS calls,
    countMergeIf(n, status_class = 5) AS server_errors,
    countMergeIf(n, status_class = 4) AS client_errors,
    sumMerge(u) AS units_sum,
    arrayMap(x -> toFloat64(x), ` + quantiles + `(0.5, 0.9, 0.99)(q, g.1 != ` + strconv.Itoa(kindClass) + `)) AS lat
FROM
(
` + strings.Join(pieces, "\nUNION ALL\n") + `
)
ARRAY JOIN [
    tuple(toUInt8(` + strconv.Itoa(kindDay) + `), day_index, '', '', toUInt8(0)),
    tuple(toUInt8(` + strconv.Itoa(kindRoute) + `), toUInt32(0), method, route, toUInt8(0)),
    tuple(toUInt8(` + strconv.Itoa(kindTotal) + `), toUInt32(0), '', '', toUInt8(0)),
    tuple(toUInt8(` + strconv.Itoa(kindClass) + `), toUInt32(0), '', '', status_class)] AS g
GROUP BY kind, day_i, m, r, cls
ORDER BY kind, calls DESC, day_i, m, r, cls
LIMIT ` + strconv.Itoa(MaxAnalyticsRoutes+1) + ` BY kind`
}

// pieceSQL reads table t's ranges of p, grouped by day, route and status
// class, as aggregate states of one type whatever the table (the raw
// table's computed like the roll-ups' materialized views compute them).
func pieceSQL(t rollupTable, p *piecePlan, cuts []time.Time, byKey, timing bool) string {
	table, ts := map[rollupTable]string{tableDay: "usage_rollup_day", tableHour: "usage_rollup_hour",
		tableMinute: "usage_rollup_minute", tableRaw: "usage_events"}[t], "toUInt32(bucket)"
	states := `status_class,
    countMergeState(requests) AS n,
    sumMergeState(units) AS u,
    quantilesMergeState(0.5, 0.9, 0.99)(latency_ms) AS q`
	switch t {
	case tableDay:
		// The day roll-up's Date is a UTC day (the server runs in UTC).
		ts = "toUInt32(toDateTime(bucket))"
	case tableRaw:
		ts = "toUInt32(time)"
		states = `toUInt8(intDiv(status, 100)) AS status_class,
    countState() AS n,
    sumState(units) AS u,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS q`
		if timing {
			states = strings.Replace(states, "quantilesState", "quantilesTimingState", 1)
		}
	}
	day := dayIndexSQL(ts, p.from(), p.to(), cuts)
	where := "subject = @subject"
	if byKey {
		where += " AND key_id = @key_id"
	}
	return `SELECT
    ` + day + ` AS day_index, method, route, ` + states + `
FROM ` + table + `
WHERE ` + where + `
  AND ` + p.rangeSQL(t) + `
GROUP BY day_index, method, route, status_class`
}

// dayIndexSQL is the day of the window an instant ts (seconds) falls in.
// When every day of the window is 24 hours long (no clock change in it),
// that is arithmetic; otherwise it counts the day starts at or before ts,
// which costs a comparison per day start and row.
func dayIndexSQL(ts string, from, to time.Time, cuts []time.Time) string {
	if len(cuts) == 0 {
		return "toUInt32(0)"
	}
	const day = 24 * time.Hour
	uniform := !from.Before(cuts[0].Add(-day)) && !to.After(cuts[len(cuts)-1].Add(day))
	for i := 1; i < len(cuts) && uniform; i++ {
		uniform = cuts[i].Sub(cuts[i-1]) == day
	}
	if uniform {
		return "toUInt32(intDiv(" + ts + " - " + strconv.FormatInt(cuts[0].Add(-day).Unix(), 10) + ", 86400))"
	}
	nums := make([]string, len(cuts))
	for i, c := range cuts {
		nums[i] = strconv.FormatInt(c.Unix(), 10)
	}
	return "toUInt32(arrayCount(c -> c <= " + ts + ", [" + strings.Join(nums, ", ") + "]))"
}
