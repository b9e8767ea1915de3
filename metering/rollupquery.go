package metering

// Meter totals from the billing roll-up (usage_billing_hour, ClickHouse
// migration 0004): the same figures as MeterTotalsBatch over usage_events,
// with the whole hours of a window read from hourly states and only the
// partial hours at its edges from the base table. A month of a busy
// subscription is millions of events but at most a few thousand roll-up
// rows.
//
// The roll-up keeps per hour, method and status class what every
// aggregation needs, but not the path: a meter with a route filter is
// counted on the base table, and so is a window with watermarks (the
// roll-up keeps no Kafka offsets). It holds only the rows inserted after
// its view began, so it serves the hours from BillingRollupFrom on, and
// it may lack rows of the hours usage_billing_suspect lists (an insert
// that failed after writing usage_events, ClickHouse migration 0005):
// those are counted from usage_events too.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
)

// RollupMaxFuture is the furthest ahead of a processor's clock an event
// written to usage_events may be while the roll-up serves: processors
// refuse a larger processors.Config.MaxFuture. A row inserted before the
// view existed is then at most this far ahead of the clock that received
// it, which rollupLead covers.
const RollupMaxFuture = 30 * time.Minute

// rollupLead is how long after the roll-up's view began its first served
// hour may start: RollupMaxFuture, and as much again for the processor's
// clock and ClickHouse's disagreeing.
const rollupLead = 2 * RollupMaxFuture

// rollupSinceSQL reads when the view began; several rows (a migration
// run twice) mean the earliest is when it began.
const rollupSinceSQL = `SELECT toUInt32(min(began)), count() FROM usage_billing_since`

// BillingRollupFrom returns the start of the first hour the billing
// roll-up holds completely: the first whole hour at least rollupLead after
// its view began. ok is false when the roll-up has no record of its start
// (a database without migration 0004's row): it then serves nothing.
func BillingRollupFrom(ctx context.Context, conn driver.Conn) (from time.Time, ok bool, err error) {
	var (
		began uint32
		rows  uint64
	)
	if err := conn.QueryRow(ctx, rollupSinceSQL).Scan(&began, &rows); err != nil {
		return time.Time{}, false, fmt.Errorf("read billing roll-up start: %w", err)
	}
	if rows == 0 {
		return time.Time{}, false, nil
	}
	return ceilHour(int64(began) + int64(rollupLead/time.Second)), true, nil
}

// ceilHour is the first hour starting at or after sec (seconds since 1970).
func ceilHour(sec int64) time.Time {
	return time.Unix((sec+3599)/3600*3600, 0).UTC()
}

// RollupServes reports whether the billing roll-up can compute m: every
// aggregation and field it has, but not a route filter, since routes
// match the path, which the roll-up does not keep.
func RollupServes(m Meter) bool {
	return len(m.Filter.Routes) == 0
}

// MeterTotalsRollupMany is MeterTotalsMany, exactly, reading the billing
// roll-up where it serves: for a window without watermarks, the meters
// RollupServes takes whole hours of the window from the roll-up (those
// from BillingRollupFrom on) and the rest of the window from
// usage_events; every other meter, and every window the roll-up has no
// whole hour of, is MeterTotalsMany's.
func MeterTotalsRollupMany(ctx context.Context, conn driver.Conn, windows []MeterWindow) ([]map[string]decimal.Decimal, error) {
	since, ok, err := BillingRollupFrom(ctx, conn)
	if err != nil {
		return nil, err
	}
	if !ok {
		return MeterTotalsMany(ctx, conn, windows)
	}
	return meterTotalsSince(ctx, conn, windows, since)
}

// rollupWindow is the part of a window the roll-up query counts: its
// served meters, the whole hours [hoursAt[0], hoursAt[1]) read from the
// roll-up, and the seconds around them, [from, hoursAt[0]) and
// [hoursAt[1], to), read from usage_events (seconds since 1970).
type rollupWindow struct {
	at       int
	subject  string
	meters   []Meter
	from, to int64
	hoursAt  [2]int64
}

// meterTotalsSince is MeterTotalsRollupMany with the roll-up serving the
// hours from since on.
func meterTotalsSince(ctx context.Context, conn driver.Conn, windows []MeterWindow, since time.Time) ([]map[string]decimal.Decimal, error) {
	base := slices.Clone(windows)
	var rolled []rollupWindow
	for i, w := range windows {
		rw, ok := splitWindow(w, since)
		if !ok {
			continue
		}
		if err := checkMeters(w); err != nil {
			return nil, err
		}
		rw.at = i
		base[i].Meters = slices.DeleteFunc(slices.Clone(w.Meters), RollupServes)
		rolled = append(rolled, rw)
	}
	out, err := MeterTotalsMany(ctx, conn, base)
	if err != nil {
		return nil, err
	}
	for _, batch := range rollupRounds(rolled) {
		if err := rollupTotals(ctx, conn, batch, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// rollupRounds groups the windows into query rounds, their subjects
// distinct in each. A window whose edges span more hours than PREWHERE
// lists (one that began long before the roll-up) would make its round read
// the whole span of every window's edges: such windows are counted in
// rounds of their own.
func rollupRounds(rolled []rollupWindow) [][]rollupWindow {
	var narrow, wide []int
	for i, rw := range rolled {
		if rw.edgeHours() > maxEdgeHours {
			wide = append(wide, i)
		} else {
			narrow = append(narrow, i)
		}
	}
	var out [][]rollupWindow
	for _, group := range [][]int{narrow, wide} {
		for _, round := range distinctRounds(group, func(i int) string { return rolled[i].subject }) {
			batch := make([]rollupWindow, len(round))
			for j, i := range round {
				batch[j] = rolled[i]
			}
			out = append(out, batch)
		}
	}
	return out
}

// edgeHours is how many hours the window's edges fall in.
func (w rollupWindow) edgeHours() int64 {
	hours := func(lo, hi int64) int64 {
		if lo >= hi {
			return 0
		}
		return (hi-1)/3600 - lo/3600 + 1
	}
	return hours(w.from, w.hoursAt[0]) + hours(w.hoursAt[1], w.to)
}

// splitWindow returns the part of w the roll-up serves, ok false when it
// serves none: w has watermarks, no meter the roll-up serves, or no whole
// hour from since on. Bounds are whole seconds, as usage_events compares
// them (unixSeconds).
func splitWindow(w MeterWindow, since time.Time) (rollupWindow, bool) {
	if len(w.Watermarks) > 0 || !slices.ContainsFunc(w.Meters, RollupServes) {
		return rollupWindow{}, false
	}
	from, to := unixSeconds(w.From), unixSeconds(w.To)
	first := max(ceilHour(from).Unix(), since.Unix())
	last := to / 3600 * 3600
	if first >= last {
		return rollupWindow{}, false
	}
	var served []Meter
	for _, m := range w.Meters {
		if RollupServes(m) {
			served = append(served, m)
		}
	}
	return rollupWindow{subject: w.Subject, meters: served, from: from, to: to, hoursAt: [2]int64{first, last}}, true
}

// checkMeters refuses what MeterTotalsBatch refuses: an invalid meter, or
// a slug listed twice.
func checkMeters(w MeterWindow) error {
	slugs := make(map[string]bool, len(w.Meters))
	for _, m := range w.Meters {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("query meter totals: subject %q: %w", w.Subject, err)
		}
		if slugs[m.Slug] {
			return fmt.Errorf("query meter totals: subject %q: %w: slug: %q is listed twice", w.Subject, ErrInvalidMeter, m.Slug)
		}
		slugs[m.Slug] = true
	}
	return nil
}

// rollupTotalsSQL is the frame of the roll-up query: the roll-up's rows
// of each window's whole hours, merged per subject, method and status
// class, and the billable events of its edges, aggregated the same way,
// in one union that the meters' conditional aggregates (%[1]s) then fold
// per subject.
//
// Key sets (%[2]s and %[3]s, rollupKeysSQL and edgeKeysSQL, only when a
// unique_count meter asks: merging them is most of the roll-up's cost) are
// merged as states, so a key seen both in the hours and at an edge counts
// once; keyless says whether the empty key, which no unique_count counts,
// is in a set.
//
// The edges are read from the span of all of them (@e_from, @e_to, for the
// sorting key), PREWHERE keeps the rows of the hours they fall in (%[4]s):
// a set lookup on the time column before any other column is read, where
// the edges of a month's windows are a few hours of it. transform() then
// holds each row to its own subject's edges.
//
// A suspect hour (usage_billing_suspect, %[5]s) of a window's whole hours
// is left out of the roll-up's part and read from usage_events with the
// edges, so rows the roll-up missed are counted and none twice.
const rollupTotalsSQL = `SELECT subject,
    %[1]s
FROM (
    SELECT subject, method, status_class,
        countMerge(requests) AS n,
        sumMerge(units_sum) AS units_sum,
        sumMerge(request_bytes_sum) AS request_bytes_sum,
        sumMerge(response_bytes_sum) AS response_bytes_sum,
        sumMerge(latency_ms_sum) AS latency_ms_sum,
        maxMerge(units_max) AS units_max,
        maxMerge(request_bytes_max) AS request_bytes_max,
        maxMerge(response_bytes_max) AS response_bytes_max,
        maxMerge(latency_ms_max) AS latency_ms_max%[2]s
    FROM usage_billing_hour
    WHERE subject IN @subjects
      AND bucket >= toDateTime(@h_first) AND bucket < toDateTime(@h_last)
      AND toUInt32(bucket) >= toUInt32(transform(subject, @w_subjects, @w_first, '0'))
      AND toUInt32(bucket) < toUInt32(transform(subject, @w_subjects, @w_last, '0'))
      AND (subject, toUInt32(bucket)) NOT IN (%[5]s)
    GROUP BY subject, method, status_class
    UNION ALL
    SELECT subject, method, toUInt8(intDiv(status, 100)) AS status_class,
        count() AS n,
        sum(units) AS units_sum,
        sum(toDecimal128(request_bytes, 0)) AS request_bytes_sum,
        sum(toDecimal128(response_bytes, 0)) AS response_bytes_sum,
        sum(toDecimal128(latency_ms, 0)) AS latency_ms_sum,
        max(units) AS units_max,
        max(request_bytes) AS request_bytes_max,
        max(response_bytes) AS response_bytes_max,
        max(latency_ms) AS latency_ms_max%[3]s
    FROM usage_events
    PREWHERE (%[4]s) OR toUInt32(toStartOfHour(time, 'UTC')) IN (SELECT hour FROM (%[5]s))
    WHERE subject IN @subjects
      AND time >= toDateTime(@e_from) AND time < toDateTime(@e_to)
      AND ((toUInt32(time) >= toUInt32(transform(subject, @w_subjects, @w_from, '0'))
          AND toUInt32(time) < toUInt32(transform(subject, @w_subjects, @w_first, '0')))
        OR (toUInt32(time) >= toUInt32(transform(subject, @w_subjects, @w_last, '0'))
          AND toUInt32(time) < toUInt32(transform(subject, @w_subjects, @w_to, '0')))
        OR (toUInt32(time) >= toUInt32(transform(subject, @w_subjects, @w_first, '0'))
          AND toUInt32(time) < toUInt32(transform(subject, @w_subjects, @w_last, '0'))
          AND (subject, toUInt32(toStartOfHour(time, 'UTC'))) IN (%[5]s)))
      AND refusal = ''
      AND status < 500
    GROUP BY subject, method, status_class
)
GROUP BY subject`

// suspectSQL lists the suspect hours of the query's subjects, as
// (subject, hour in seconds since 1970).
const suspectSQL = `SELECT subject, toUInt32(hour) AS hour FROM usage_billing_suspect
    WHERE subject IN @subjects AND hour >= toDateTime(@h_first) AND hour < toDateTime(@h_last)`

// rollupKeysSQL and edgeKeysSQL are the key-set columns of the two parts
// of rollupTotalsSQL.
const (
	rollupKeysSQL = `,
        uniqExactMergeState(key_ids) AS key_ids,
        maxMerge(keyless) AS keyless`
	edgeKeysSQL = `,
        uniqExactState(key_id) AS key_ids,
        max(toUInt8(key_id = '')) AS keyless`
)

// maxEdgeHours bounds the hours PREWHERE lists; windows whose edges reach
// over more (a window from long before the roll-up began) read their span
// without it.
const maxEdgeHours = 4096

// rollupQuery is the query of one round of rollupTotals: its conditional
// aggregates, one per distinct meter definition, and which column answers
// each window's meters.
type rollupQuery struct {
	cols []string
	// keys is whether a column merges key sets.
	keys       bool
	columns    map[string]int
	windowCols [][]int
	args       []any
	size       int
}

// rollupTotals counts the windows' served meters (their subjects
// distinct) and writes them into out.
func rollupTotals(ctx context.Context, conn driver.Conn, windows []rollupWindow, out []map[string]decimal.Decimal) error {
	q := &rollupQuery{columns: map[string]int{}, windowCols: make([][]int, len(windows))}
	at := make(map[string]int, len(windows))
	for i, w := range windows {
		at[w.subject] = i
		for _, m := range w.meters {
			q.windowCols[i] = append(q.windowCols[i], q.column(m))
			// A subject without rows has no row in the answer.
			out[w.at][m.Slug] = decimal.Zero
		}
	}
	prewhere := q.bind(windows)
	rollupKeys, edgeKeys := "", ""
	if q.keys {
		rollupKeys, edgeKeys = rollupKeysSQL, edgeKeysSQL
	}
	text := fmt.Sprintf(rollupTotalsSQL, strings.Join(q.cols, ",\n    "), rollupKeys, edgeKeys, prewhere, suspectSQL)
	err := queryTotals(ctx, conn, text, q.size, q.args, len(q.cols), func(subject string, values []decimal.Decimal) {
		i, ok := at[subject]
		if !ok {
			return
		}
		for j, m := range windows[i].meters {
			out[windows[i].at][m.Slug] = values[q.windowCols[i][j]]
		}
	})
	if err != nil {
		return fmt.Errorf("meter totals from the roll-up: %w", err)
	}
	return nil
}

// column returns the column of m's definition, adding it when new. m is
// valid and served: its filter is methods and status classes at most.
func (q *rollupQuery) column(m Meter) int {
	key := fmt.Sprintf("%q", Meter{Aggregation: m.Aggregation, Field: m.Field, Filter: m.Filter})
	if c, ok := q.columns[key]; ok {
		return c
	}
	p := fmt.Sprintf("c%d", len(q.cols))
	var conds []string
	if len(m.Filter.Methods) > 0 {
		conds = append(conds, fmt.Sprintf("has(@%s_methods, method)", p))
		q.args = append(q.args, clickhouse.Named(p+"_methods", m.Filter.Methods))
		q.size += len(m.Filter.Methods) * 12
	}
	if len(m.Filter.StatusClasses) > 0 {
		classes := make([]int, len(m.Filter.StatusClasses))
		for i, c := range m.Filter.StatusClasses {
			// Validate allows only "1xx" … "4xx".
			classes[i] = int(c[0] - '0')
		}
		conds = append(conds, fmt.Sprintf("has(@%s_classes, status_class)", p))
		q.args = append(q.args, clickhouse.Named(p+"_classes", classes))
		q.size += len(classes) * 3
	}
	cond := "1"
	if len(conds) > 0 {
		cond = strings.Join(conds, " AND ")
	}
	var col string
	switch {
	case m.Aggregation == AggCount:
		col = fmt.Sprintf("toDecimal128(sumIf(n, %s), 0)", cond)
	case m.Aggregation == AggSum:
		col = fmt.Sprintf("sumIf(%s_sum, %s)", m.Field, cond)
	case m.Aggregation == AggMax && m.Field == FieldUnits:
		col = fmt.Sprintf("maxIf(units_max, %s)", cond)
	case m.Aggregation == AggMax:
		col = fmt.Sprintf("toDecimal128(maxIf(%s_max, %s), 0)", m.Field, cond)
	default:
		// unique_count: the merged set less the empty key when it is in
		// it, capped as MeterTotalsBatch caps it.
		col = fmt.Sprintf("toDecimal128(least(uniqExactMergeIf(key_ids, %[1]s) - maxIf(keyless, %[1]s), %[2]d), 0)", cond, enforcement.MaxMeterSetMembers)
		q.keys = true
	}
	q.columns[key] = len(q.cols)
	q.cols = append(q.cols, col)
	q.size += len(col)
	return len(q.cols) - 1
}

// bind binds the windows' subjects and bounds and returns the PREWHERE
// condition of the edges: the hours they fall in, written as numbers
// (computed here, never input).
func (q *rollupQuery) bind(windows []rollupWindow) string {
	n := len(windows)
	set := make([]any, n)
	subjects, froms, firsts, lasts, tos := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	hFirst, hLast := windows[0].hoursAt[0], windows[0].hoursAt[1]
	eFrom, eTo := hFirst, hFirst
	hours := map[int64]bool{}
	edge := func(lo, hi int64) {
		if lo >= hi {
			return
		}
		eFrom, eTo = min(eFrom, lo), max(eTo, hi)
		for h := lo / 3600 * 3600; h < hi && len(hours) <= maxEdgeHours; h += 3600 {
			hours[h] = true
		}
	}
	for i, w := range windows {
		set[i], subjects[i] = w.subject, w.subject
		froms[i], tos[i] = strconv.FormatInt(w.from, 10), strconv.FormatInt(w.to, 10)
		firsts[i], lasts[i] = strconv.FormatInt(w.hoursAt[0], 10), strconv.FormatInt(w.hoursAt[1], 10)
		hFirst, hLast = min(hFirst, w.hoursAt[0]), max(hLast, w.hoursAt[1])
		edge(w.from, w.hoursAt[0])
		edge(w.hoursAt[1], w.to)
		// A subject is in the query 13 times: w_subjects 8 and subjects 5.
		q.size += 13*3*len(w.subject) + 5*16
	}
	// Suspect hours are read from usage_events anywhere in the whole
	// hours: the edges' span covers them.
	eFrom, eTo = min(eFrom, hFirst), max(eTo, hLast)
	q.args = append(q.args, clickhouse.Named("subjects", clickhouse.GroupSet{Value: set}),
		clickhouse.Named("h_first", hFirst), clickhouse.Named("h_last", hLast),
		clickhouse.Named("e_from", eFrom), clickhouse.Named("e_to", eTo),
		clickhouse.Named("w_subjects", subjects), clickhouse.Named("w_from", froms), clickhouse.Named("w_first", firsts),
		clickhouse.Named("w_last", lasts), clickhouse.Named("w_to", tos))
	var prewhere string
	switch {
	case len(hours) == 0:
		// Every window is whole hours: no edge to read.
		prewhere = "0"
	case len(hours) > maxEdgeHours:
		prewhere = "1"
	default:
		list := make([]string, 0, len(hours))
		for _, h := range slices.Sorted(maps.Keys(hours)) {
			list = append(list, strconv.FormatInt(h, 10))
		}
		prewhere = "toUInt32(toStartOfHour(time, 'UTC')) IN (" + strings.Join(list, ", ") + ")"
	}
	q.size += len(rollupTotalsSQL) + len(rollupKeysSQL) + len(edgeKeysSQL) + len(prewhere) + 3*len(suspectSQL)
	return prewhere
}
