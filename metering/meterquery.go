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

// meterTotalsSQL is the frame of the query MeterTotals runs: one
// conditional aggregate per meter (the first %s), over the billable events
// of one subject in [@from, @to) (and, for MeterTotalsUpTo, the second %s:
// watermarkSQL). The table's sorting key starts with (subject, time), so
// it reads only that subscription's rows in the window. Billable is
// Billable's rule: no gateway refusal and a status below 500.
const meterTotalsSQL = `SELECT %s
FROM usage_events
WHERE subject = @subject
  AND time >= @from
  AND time < @to
  AND refusal = ''
  AND status < 500%s`

// watermarkSQL keeps the rows at or below their partition's watermark;
// transform() looks the partition up in constant arrays (portable down to
// 18.16, which has no maps) and lets the rows of an unlisted partition
// through. The offsets travel as strings: an array literal of numbers
// takes the smallest type that holds them, UInt64 from 2^32 on, and
// ClickHouse finds no common type for UInt64 and Int64.
const watermarkSQL = `
  AND kafka_offset <= toInt64(transform(toString(kafka_partition), @wm_partitions, @wm_offsets, '9223372036854775807'))`

// defaultMaxQuerySize is ClickHouse's default max_query_size. The client
// binds parameters into the query text, so many meters with long route
// patterns can pass it; MeterTotals raises the setting for such a query
// instead of splitting it.
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
// before they are compared. Every meter must be valid and slugs distinct;
// otherwise nothing is queried.
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
	totals := make(map[string]decimal.Decimal, len(meters))
	if len(meters) == 0 {
		return totals, nil
	}
	cols := make([]string, len(meters))
	args := []any{
		clickhouse.Named("subject", subject),
		clickhouse.Named("from", from.Truncate(time.Second).UTC()),
		clickhouse.Named("to", to.Truncate(time.Second).UTC()),
	}
	size := len(meterTotalsSQL) + len(subject)*2
	where := ""
	if len(watermarks) > 0 {
		// transform() refuses empty arrays, hence no condition without
		// watermarks.
		parts := make([]string, 0, len(watermarks))
		offsets := make([]string, 0, len(watermarks))
		for _, p := range slices.Sorted(maps.Keys(watermarks)) {
			parts = append(parts, strconv.Itoa(int(p)))
			offsets = append(offsets, strconv.FormatInt(watermarks[p], 10))
		}
		where = watermarkSQL
		args = append(args, clickhouse.Named("wm_partitions", parts), clickhouse.Named("wm_offsets", offsets))
		size += len(watermarkSQL) + 32*len(parts)
	}
	for i, m := range meters {
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("query meter totals: meter %d: %w", i, err)
		}
		if _, dup := totals[m.Slug]; dup {
			return nil, fmt.Errorf("query meter totals: %w: slug: %q is listed twice", ErrInvalidMeter, m.Slug)
		}
		totals[m.Slug] = decimal.Zero
		col, colArgs, n, err := meterColumn(fmt.Sprintf("m%d", i), m)
		if err != nil {
			return nil, fmt.Errorf("query meter totals: meter %q: %w", m.Slug, err)
		}
		cols[i] = col
		args = append(args, colArgs...)
		size += n
	}
	if size > defaultMaxQuerySize/2 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_query_size": 2 * size}))
	}
	query := fmt.Sprintf(meterTotalsSQL, strings.Join(cols, ",\n    "), where)
	values := make([]decimal.Decimal, len(meters))
	dest := make([]any, len(meters))
	for i := range values {
		dest[i] = &values[i]
	}
	if err := conn.QueryRow(ctx, query, args...).Scan(dest...); err != nil {
		return nil, fmt.Errorf("query meter totals: %w", err)
	}
	for i, m := range meters {
		totals[m.Slug] = values[i]
	}
	return totals, nil
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
		// An event without a key adds nothing to the set (Meter.KeyValue).
		col = fmt.Sprintf("toDecimal128(uniqExactIf(key_id, key_id != '' AND %s), 0)", cond)
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
