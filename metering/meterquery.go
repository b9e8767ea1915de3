package metering

// A meter's value for any window, from ClickHouse: the same fold the
// processors keep per billing period in Redis (Meter.Contribution and
// Meter.KeyValue), computed over usage_events, so the two can be compared.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
)

// meterTotalsSQL is the frame of the query MeterTotalsBatch runs: one
// conditional aggregate per distinct meter (the first %s), over the
// billable events of the subjects in their windows (the second %s:
// meterWindowSQL or meterWindowsSQL), grouped by subject. The table's
// sorting key starts with (subject, time), so it reads only those
// subscriptions' rows in the windows. Billable is Billable's rule: no
// gateway refusal and a status below 500.
const meterTotalsSQL = `SELECT subject,
    %s
FROM usage_events
WHERE %s
  AND refusal = ''
  AND status < 500
GROUP BY subject`

// meterWindowSQL is the window of a single subject. Its bounds travel as
// seconds since 1970, not as time.Time: ClickHouse 18.16 reads a DateTime
// text past 2105 as a small number, so the year 3000 would end a window in
// 1970.
const meterWindowSQL = `subject = @subject
  AND time >= toDateTime(@from)
  AND time < toDateTime(@to)`

// meterWindowsSQL is the windows of several subjects: the set and the
// span of all windows for the index, then each row held to its subject's
// own window, looked up with transform() in constant arrays (portable down
// to 18.16, which has no maps).
const meterWindowsSQL = `subject IN @subjects
  AND time >= toDateTime(@from)
  AND time < toDateTime(@to)
  AND toUInt32(time) >= toUInt32(transform(subject, @w_subjects, @w_from, '0'))
  AND toUInt32(time) < toUInt32(transform(subject, @w_subjects, @w_to, '0'))`

// watermarkSQL keeps the rows at or below their partition's watermark (the
// partition named by subject/partition) and lets the rows of an unlisted
// partition through. Numbers travel as strings: an array literal of
// numbers takes the smallest type that holds them, UInt64 from 2^32 on,
// and ClickHouse finds no common type for UInt64 and Int64.
const watermarkSQL = `
  AND kafka_offset <= toInt64(transform(concat(subject, '/', toString(kafka_partition)), @wm_keys, @wm_offsets, '9223372036854775807'))`

// defaultMaxQuerySize is ClickHouse's default max_query_size. The client
// binds parameters into the query text, so many meters with long route
// patterns can pass it; MeterTotalsBatch raises the setting for such a
// query instead of splitting it.
const defaultMaxQuerySize = 256 << 10

// MeterTotals returns each meter's value over the billable events of
// subject in [from, to), keyed by slug, from usage_events: exactly what the
// processors' counters would hold for the same events (sum and max of a
// Meter.Contribution, the number of distinct non-empty Meter.KeyValue
// values), as a quantity at the meter's Scale. A max over no events is 0.
//
// All meters are computed by one query, one conditional aggregate each
// (countIf, sumIf, maxIf, uniqExactIf), in decimals and integers only:
// units sum as Decimal(38, 6), the other fields as Decimal(38, 0), so no
// sum can wrap. The filter becomes SQL: methods and status classes are
// bound arrays, each route pattern a bound RouteRegexp for match(path, …).
//
// usage_events keeps whole seconds, so from and to are cut to the second
// (and to DateTime's range, 1970 to 2106) before they are compared. Every
// meter must be valid and slugs distinct; otherwise nothing is queried.
func MeterTotals(ctx context.Context, conn driver.Conn, subject string, meters []Meter, from, to time.Time) (map[string]decimal.Decimal, error) {
	return MeterTotalsUpTo(ctx, conn, subject, meters, from, to, nil)
}

// MeterTotalsUpTo is MeterTotals over the rows the processors had applied
// when they left watermarks (Kafka partition → highest offset applied,
// the watermarks of the subject's period counter): a row of a listed
// partition counts when its kafka_offset is at most the partition's
// watermark, the rows of other partitions all count. Compared with
// counters read together with their watermarks, it leaves out the events
// still in flight, so a difference is drift, not lag.
func MeterTotalsUpTo(ctx context.Context, conn driver.Conn, subject string, meters []Meter, from, to time.Time, watermarks map[int32]int64) (map[string]decimal.Decimal, error) {
	out, err := MeterTotalsBatch(ctx, conn, []MeterWindow{{Subject: subject, Meters: meters, From: from, To: to, Watermarks: watermarks}})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// MeterWindow is one subscription's meters over one window.
type MeterWindow struct {
	Subject  string
	Meters   []Meter
	From, To time.Time
	// Watermarks, when not empty, keep only the rows the processors had
	// applied (see MeterTotalsUpTo).
	Watermarks map[int32]int64
}

// MeterTotalsBatch is MeterTotalsUpTo for several subscriptions at once,
// each with its own meters, window and watermarks, in one query: what a
// drift check over many subscriptions needs. Meters with the same
// definition (all but slug and name), as subscriptions of one plan have,
// are computed once. The answer holds one map per window, in order. A
// subject may appear once.
func MeterTotalsBatch(ctx context.Context, conn driver.Conn, windows []MeterWindow) ([]map[string]decimal.Decimal, error) {
	q, err := planMeterQuery(windows)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]decimal.Decimal, len(windows))
	for i, w := range windows {
		out[i] = make(map[string]decimal.Decimal, len(w.Meters))
		for _, m := range w.Meters {
			// A subject without rows has no row in the answer: every
			// aggregate over no events, max included, is 0.
			out[i][m.Slug] = decimal.Zero
		}
	}
	if q.text == "" {
		return out, nil
	}
	err = queryTotals(ctx, conn, q.text, q.size, q.args, len(q.cols), func(subject string, values []decimal.Decimal) {
		i := q.at[subject]
		for j, m := range windows[i].Meters {
			out[i][m.Slug] = values[q.windowCols[i][j]]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("meter totals: %w", err)
	}
	return out, nil
}

// queryTotals runs a totals query of size bytes at most (raising
// ClickHouse's max_query_size when it needs more) whose rows are a
// subject and cols decimal columns, and calls row for each.
func queryTotals(ctx context.Context, conn driver.Conn, text string, size int, args []any, cols int,
	row func(subject string, values []decimal.Decimal)) error {
	if size > defaultMaxQuerySize/2 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_query_size": 2 * size}))
	}
	rows, err := conn.Query(ctx, text, args...)
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	var subject string
	values := make([]decimal.Decimal, cols)
	dest := append([]any{&subject}, make([]any, cols)...)
	for i := range values {
		dest[i+1] = &values[i]
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("read row: %w", err)
		}
		row(subject, values)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read rows: %w", err)
	}
	return nil
}

// meterQuery is the query of a MeterTotalsBatch: its text (empty when no
// window has a meter), columns and parameters, and an upper bound of its
// size once the client binds them (escaping at most doubles a string).
type meterQuery struct {
	text string
	cols []string
	// columns maps a meter's definition to its column.
	columns map[string]int
	// windowCols[i][j] is the column of the j-th meter of window i; at is
	// the window of each subject.
	windowCols [][]int
	at         map[string]int
	args       []any
	size       int
}

// planMeterQuery checks the windows and writes their query.
func planMeterQuery(windows []MeterWindow) (*meterQuery, error) {
	q := &meterQuery{columns: map[string]int{}, windowCols: make([][]int, len(windows)), at: make(map[string]int, len(windows))}
	for i, w := range windows {
		if _, dup := q.at[w.Subject]; dup {
			return nil, fmt.Errorf("query meter totals: subject %q has two windows", w.Subject)
		}
		q.at[w.Subject] = i
		slugs := make(map[string]bool, len(w.Meters))
		for _, m := range w.Meters {
			if err := m.Validate(); err != nil {
				return nil, fmt.Errorf("query meter totals: subject %q: %w", w.Subject, err)
			}
			if slugs[m.Slug] {
				return nil, fmt.Errorf("query meter totals: subject %q: %w: slug: %q is listed twice", w.Subject, ErrInvalidMeter, m.Slug)
			}
			slugs[m.Slug] = true
			c, err := q.column(m)
			if err != nil {
				return nil, fmt.Errorf("query meter totals: subject %q, meter %q: %w", w.Subject, m.Slug, err)
			}
			q.windowCols[i] = append(q.windowCols[i], c)
		}
	}
	if len(q.cols) > 0 {
		q.text = fmt.Sprintf(meterTotalsSQL, strings.Join(q.cols, ",\n    "), q.where(windows))
	}
	return q, nil
}

// column returns the column of m's definition, adding it when new.
func (q *meterQuery) column(m Meter) (int, error) {
	key := fmt.Sprintf("%q", Meter{Aggregation: m.Aggregation, Field: m.Field, Filter: m.Filter})
	if c, ok := q.columns[key]; ok {
		return c, nil
	}
	col, args, n, err := meterColumn(fmt.Sprintf("m%d", len(q.cols)), m)
	if err != nil {
		return 0, err
	}
	q.columns[key] = len(q.cols)
	q.cols = append(q.cols, col)
	q.args = append(q.args, args...)
	q.size += n
	return len(q.cols) - 1, nil
}

// where returns the WHERE clause of the windows' rows, binding its
// parameters.
func (q *meterQuery) where(windows []MeterWindow) string {
	var where string
	if len(windows) == 1 {
		w := windows[0]
		where = meterWindowSQL
		q.args = append(q.args, clickhouse.Named("subject", w.Subject), clickhouse.Named("from", unixSeconds(w.From)), clickhouse.Named("to", unixSeconds(w.To)))
	} else {
		set := make([]any, len(windows))
		subjects, froms, tos := make([]string, len(windows)), make([]string, len(windows)), make([]string, len(windows))
		from, to := windows[0].From, windows[0].To
		for i, w := range windows {
			set[i], subjects[i] = w.Subject, w.Subject
			froms[i], tos[i] = strconv.FormatInt(unixSeconds(w.From), 10), strconv.FormatInt(unixSeconds(w.To), 10)
			if w.From.Before(from) {
				from = w.From
			}
			if w.To.After(to) {
				to = w.To
			}
		}
		where = meterWindowsSQL
		q.args = append(q.args, clickhouse.Named("subjects", clickhouse.GroupSet{Value: set}),
			clickhouse.Named("from", unixSeconds(from)), clickhouse.Named("to", unixSeconds(to)),
			clickhouse.Named("w_subjects", subjects), clickhouse.Named("w_from", froms), clickhouse.Named("w_to", tos))
	}
	var keys, offsets []string
	for _, w := range windows {
		for _, p := range slices.Sorted(maps.Keys(w.Watermarks)) {
			keys = append(keys, w.Subject+"/"+strconv.Itoa(int(p)))
			offsets = append(offsets, strconv.FormatInt(w.Watermarks[p], 10))
		}
	}
	// transform() refuses empty arrays, hence no condition without
	// watermarks.
	if len(keys) > 0 {
		where += watermarkSQL
		q.args = append(q.args, clickhouse.Named("wm_keys", keys), clickhouse.Named("wm_offsets", offsets))
	}
	for _, w := range windows {
		q.size += 4*len(w.Subject) + 64 + 48*len(w.Watermarks)
	}
	q.size += len(meterTotalsSQL) + len(meterWindowsSQL) + len(watermarkSQL)
	return where
}

// unixSeconds is t as a DateTime bound: whole seconds (usage_events keeps
// no more), since 1970, within the type's range (to 2106), so that a
// window's far bounds (the zero time, the year 3000) stay bounds instead of
// wrapping.
func unixSeconds(t time.Time) int64 {
	return min(max(t.Unix(), 0), 1<<32-1)
}

// meterColumn is the aggregate of one meter, the parameters it binds (named
// after p) and an upper bound of the bytes both add to the bound query
// (escaping at most doubles a string).
func meterColumn(p string, m Meter) (col string, args []any, size int, err error) {
	var conds []string
	f := &m.Filter
	if len(f.Methods) > 0 {
		conds = append(conds, fmt.Sprintf("has(@%s_methods, method)", p))
		args = append(args, clickhouse.Named(p+"_methods", f.Methods))
		size += len(f.Methods) * 12
	}
	if len(f.StatusClasses) > 0 {
		classes := make([]int, len(f.StatusClasses))
		for i, c := range f.StatusClasses {
			// Validate allows only "1xx" … "4xx".
			classes[i] = int(c[0] - '0')
		}
		conds = append(conds, fmt.Sprintf("has(@%s_classes, intDiv(status, 100))", p))
		args = append(args, clickhouse.Named(p+"_classes", classes))
		size += len(classes) * 3
	}
	if len(f.Routes) > 0 {
		routes := make([]string, len(f.Routes))
		for i, r := range f.Routes {
			re, err := RouteRegexp(r)
			if err != nil {
				return "", nil, 0, err
			}
			name := fmt.Sprintf("%s_r%d", p, i)
			routes[i] = fmt.Sprintf("match(path, @%s)", name)
			args = append(args, clickhouse.Named(name, re))
			size += 2*len(re) + 2
		}
		conds = append(conds, "("+strings.Join(routes, " OR ")+")")
	}
	cond := "1"
	if len(conds) > 0 {
		cond = strings.Join(conds, " AND ")
	}
	switch m.Aggregation {
	case AggCount:
		col = fmt.Sprintf("toDecimal128(countIf(%s), 0)", cond)
	case AggSum:
		if m.Field == FieldUnits {
			col = fmt.Sprintf("sumIf(units, %s)", cond)
		} else {
			col = fmt.Sprintf("sumIf(toDecimal128(%s, 0), %s)", m.Field, cond)
		}
	case AggMax:
		if m.Field == FieldUnits {
			col = fmt.Sprintf("maxIf(units, %s)", cond)
		} else {
			col = fmt.Sprintf("toDecimal128(maxIf(%s, %s), 0)", m.Field, cond)
		}
	case AggUniqueCount:
		// An event without a key adds nothing to the set (Meter.KeyValue);
		// the set holds at most enforcement.MaxMeterSetMembers, as Redis's.
		col = fmt.Sprintf("toDecimal128(least(uniqExactIf(key_id, key_id != '' AND %s), %d), 0)", cond, enforcement.MaxMeterSetMembers)
	default:
		return "", nil, 0, fmt.Errorf("%w: aggregation: %q", ErrInvalidMeter, m.Aggregation)
	}
	return col, args, size + len(col), nil
}

// Pieces of RouteRegexp. A path segment that is neither "." nor "..":
// a first character other than "." or "/", or ".x", or "..x" and more. A
// pattern's {name} or * matches one such non-empty segment; a trailing *
// matches the rest of the path, any segments (empty ones too) none of which
// is a dot segment. Spelling out the dot rule keeps each regexp complete:
// RE2 has no lookahead to refuse dot segments separately.
const (
	reSegment     = `(?:[^/.]|\.[^/.]|\.\.[^/])[^/]*`
	reRestSegment = `(?:` + reSegment + `)?`
	reRest        = reRestSegment + `(?:/` + reRestSegment + `)*`
)

// RouteRegexp translates a route pattern (the syntax of
// enforcement.KeyRecord.Allows) into an anchored RE2 regexp that matches
// exactly the paths enforcement.MatchRoute matches with it: literal
// segments compare case-sensitively, {name} and * take one non-empty
// segment, a trailing * the rest of the path (even empty), and no path
// with a "." or ".." segment matches. It is what MeterTotals hands to
// ClickHouse's match(); a test holds it to MatchRoute.
//
// Patterns are provider input. Literal text is quoted: every RE2
// metacharacter escaped, and a NUL byte written as \x00 because ClickHouse
// refuses a regexp containing one. The whole expression sits in a group
// because ClickHouse's own pre-scan of a regexp for required substrings,
// which only looks outside groups, misreads escapes such as \x2e as
// literal text. The pattern must be valid (enforcement.ValidRoute) and valid UTF-8 (ClickHouse matches in
// UTF-8; event paths always are).
func RouteRegexp(pattern string) (string, error) {
	if err := enforcement.ValidRoute(pattern); err != nil {
		return "", fmt.Errorf("translate route: %w", err)
	}
	if !utf8.ValidString(pattern) {
		return "", fmt.Errorf("translate route %q: not valid UTF-8", pattern)
	}
	var b strings.Builder
	b.WriteString(`^(?:`)
	rest := pattern[1:]
	for {
		seg, tail, more := strings.Cut(rest, "/")
		b.WriteByte('/')
		switch {
		case seg == "*" && !more:
			b.WriteString(reRest)
		case seg == "*" || strings.HasPrefix(seg, "{"):
			b.WriteString(reSegment)
		default:
			quoteLiteral(&b, seg)
		}
		if !more {
			break
		}
		rest = tail
	}
	b.WriteString(`)$`)
	return b.String(), nil
}

// quoteLiteral writes s so that RE2 matches it literally, byte for byte.
func quoteLiteral(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$':
			b.WriteByte('\\')
			b.WriteByte(c)
		case 0:
			b.WriteString(`\x00`)
		default:
			b.WriteByte(c)
		}
	}
}
