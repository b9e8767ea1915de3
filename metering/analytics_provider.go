package metering

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"
)

// Provider analytics read the roll-ups by API of ClickHouse migrations
// 0006 to 0008 (by route: usage_api_day, _hour and _minute; by status class:
// usage_api_class_hour and _minute; by subject: usage_api_consumer_day,
// _hour and _minute), which are sorted by api_id first: a question about
// some APIs reads only their rows, never usage_events (sorted by subject).
// Their buckets are whole UTC days, hours and minutes, and a provider
// window is whole minutes (ProviderWindow rounds one out). The window is
// cut at midnights, and each piece is read from the coarsest roll-up whose
// buckets fit it: a UTC day that is also a whole day of the zone (UTC, or
// any zone at UTC+0 that day) from the day roll-up, whole hours from the
// hour roll-up, and the minutes left (the ends of the window, and in zones
// such as Asia/Kolkata the half hour on each side of a midnight) from the
// minute roll-up. The days of the caller's zone need its midnights; the
// routes and the consumers, summed over the whole window, are cut at UTC
// midnights and read mostly from whole days. Every call is counted once,
// on the day of its zone.

// MaxProviderAPIs bounds the APIs one provider question reads.
const MaxProviderAPIs = 1000

// MaxProviderTop bounds the top consumers and routes an answer lists.
const MaxProviderTop = 100

// ProviderQuery asks about the usage of some APIs.
type ProviderQuery struct {
	// APIs are the API ids (UUIDs), at least one.
	APIs []string
	// From and To bound the window, [From, To), in whole minutes
	// (ProviderWindow rounds a window out to them).
	From, To time.Time
	// Zone names the IANA time zone days are cut in; empty is UTC.
	Zone string
	// Top is how many consumers and routes to list, busiest first.
	Top int
	// ByAPI asks for the figures of each API too.
	ByAPI bool

	loc    *time.Location  // Zone, loaded by ProviderUsage
	pieces []providerPiece // the window cut at the zone's midnights
	// utcPieces is the window cut at UTC midnights: what is summed over
	// the whole window (the consumers) needs no day of the zone, and UTC
	// days come whole from the day roll-ups.
	utcPieces []providerPiece
}

// ProviderWindow rounds [from, to) out to whole minutes, the grain of the
// finest roll-up by API.
func ProviderWindow(from, to time.Time) (time.Time, time.Time) {
	from = from.UTC().Truncate(time.Minute)
	if t := to.UTC().Truncate(time.Minute); t.Before(to.UTC()) {
		to = t.Add(time.Minute)
	} else {
		to = t
	}
	return from, to
}

// Latency holds latency quantiles in milliseconds, merged from
// quantilesTiming states: exact below 1,024 ms, in 16 ms steps above,
// latencies over 30 s counted as 30 s; 0 without calls.
type Latency struct {
	P50, P90, P99 float64
}

// ProviderStats is what one group of calls amounts to.
type ProviderStats struct {
	Calls uint64
	// ServerErrors counts status class 5; ClientErrors class 4 (the
	// gateway's refusals included).
	ServerErrors, ClientErrors uint64
	Units                      decimal.Decimal
	Latency                    Latency
}

// ProviderDay is one day's figures; Day is 2006-01-02 in the zone.
type ProviderDay struct {
	Day string
	ProviderStats
}

// ProviderRoute is one route's figures.
type ProviderRoute struct {
	Method, Route string
	ProviderStats
}

// ProviderAPI is one API's figures.
type ProviderAPI struct {
	APIID           string
	UniqueConsumers uint64
	ProviderStats
}

// ProviderConsumer is one subject's (subscription's) calls.
type ProviderConsumer struct {
	Subject string
	Calls   uint64
	Units   decimal.Decimal
}

// ProviderReport answers a ProviderQuery.
type ProviderReport struct {
	Total           ProviderStats
	UniqueConsumers uint64
	// Days lists the days with calls, in order.
	Days []ProviderDay
	// Routes and Consumers are the busiest first (ties by name), at most
	// Top of each.
	Routes    []ProviderRoute
	Consumers []ProviderConsumer
	// APIs lists each API with calls (ByAPI only), by id.
	APIs []ProviderAPI
}

// apiID is what an API id may look like: ids are written into the SQL as
// literals (a slice binds as an array, which 18.16 cannot use with IN).
var apiID = regexp.MustCompile(`^[0-9A-Za-z_-]{1,64}$`)

// zoneName is what a time zone name may look like inside the SQL.
var zoneName = regexp.MustCompile(`^[A-Za-z0-9_+/-]{1,64}$`)

func (q ProviderQuery) check() error {
	switch {
	case len(q.APIs) == 0 || len(q.APIs) > MaxProviderAPIs:
		return fmt.Errorf("%w: %d APIs; want 1 to %d", ErrBadQuery, len(q.APIs), MaxProviderAPIs)
	case !q.From.Before(q.To):
		return fmt.Errorf("%w: from is not before to", ErrBadQuery)
	case !q.From.Equal(q.From.Truncate(time.Minute)) || !q.To.Equal(q.To.Truncate(time.Minute)):
		return fmt.Errorf("%w: the window must be whole minutes", ErrBadQuery)
	case q.To.Sub(q.From) > time.Duration(MaxAnalyticsDaysProvider)*24*time.Hour:
		return fmt.Errorf("%w: window longer than %d days", ErrBadQuery, MaxAnalyticsDaysProvider)
	case q.Top < 0 || q.Top > MaxProviderTop:
		return fmt.Errorf("%w: top must be 0 to %d", ErrBadQuery, MaxProviderTop)
	case q.Zone != "" && !zoneName.MatchString(q.Zone):
		return fmt.Errorf("%w: time zone %q", ErrBadQuery, q.Zone)
	}
	for _, id := range q.APIs {
		if !apiID.MatchString(id) {
			return fmt.Errorf("%w: API id %q", ErrBadQuery, id)
		}
	}
	return nil
}

// MaxAnalyticsDaysProvider bounds a provider window (401 days: 400 local
// dates, whatever the zone's clock changes).
const MaxAnalyticsDaysProvider = 401

// ProviderUsage answers q in queries run at once: the figures (in two
// parts in a zone whose days are not UTC days) and the consumers. It refuses a bad query with an
// error wrapping ErrBadQuery before it reads anything.
func ProviderUsage(ctx context.Context, conn driver.Conn, q ProviderQuery) (ProviderReport, error) {
	q.From, q.To = q.From.UTC(), q.To.UTC()
	if q.Zone == "" {
		q.Zone = "UTC"
	}
	if err := q.check(); err != nil {
		return ProviderReport{}, err
	}
	loc, err := time.LoadLocation(q.Zone)
	if err != nil {
		return ProviderReport{}, fmt.Errorf("%w: time zone %q", ErrBadQuery, q.Zone)
	}
	q.loc = loc
	for a := nextDayStart(q.From, loc); a.Before(q.To); a = nextDayStart(a, loc) {
		if !a.Equal(a.Truncate(time.Minute)) {
			// Zones kept a local mean time with seconds in their offset
			// into the 20th century (Africa/Monrovia until 1972).
			return ProviderReport{}, fmt.Errorf("%w: in %s a day of this window starts at %s, not on a whole minute", ErrBadQuery, q.Zone, a.Format(time.RFC3339))
		}
	}
	q.pieces = providerPieces(q.From, q.To, loc)
	q.utcPieces = providerPieces(q.From, q.To, time.UTC)
	// The driver passes the deadline to ClickHouse as max_execution_time.
	ctx, cancel := context.WithTimeout(ctx, AnalyticsTimeout)
	defer cancel()
	var out ProviderReport
	g, gctx := errgroup.WithContext(ctx)
	if slices.Equal(q.pieces, q.utcPieces) {
		g.Go(func() error { return providerFigures(gctx, conn, q, &out, partAll) })
	} else {
		g.Go(func() error { return providerFigures(gctx, conn, q, &out, partDays) })
		g.Go(func() error { return providerFigures(gctx, conn, q, &out, partRest) })
	}
	consumers := map[string]uint64{}
	g.Go(func() error { return providerConsumers(gctx, conn, q, &out, consumers) })
	if err := g.Wait(); err != nil {
		// The days are labelled by ClickHouse, from its own copy of the
		// time zone database: a name this process knows and it does not
		// is the caller's to change, not a failure of the store.
		if strings.Contains(err.Error(), "Cannot load time zone") {
			return ProviderReport{}, fmt.Errorf("%w: time zone %q is unknown to the usage store", ErrBadQuery, q.Zone)
		}
		return ProviderReport{}, err
	}
	out.UniqueConsumers = consumers[""]
	for i := range out.APIs {
		out.APIs[i].UniqueConsumers = consumers[out.APIs[i].APIID]
	}
	return out, nil
}

func sqlDate(t time.Time) string { return "toDate('" + t.UTC().Format(time.DateOnly) + "')" }

// Kinds of the pieces a window is read in.
const (
	pieceDay     = iota // whole UTC days that are whole days of the zone
	pieceHour           // whole UTC hours inside one day of the zone
	pieceQuarter        // whole quarter hours inside one day of the zone
	pieceMinute         // the minutes left
)

// providerPiece is [From, To) read from one kind of roll-up.
type providerPiece struct {
	Kind     int
	From, To time.Time
}

// providerPieces cuts [from, to) at the midnights of loc and reads each
// day from the coarsest roll-up that fits it; adjacent pieces of a kind
// are merged.
func providerPieces(from, to time.Time, loc *time.Location) []providerPiece {
	var out []providerPiece
	add := func(kind int, a, b time.Time) {
		if !a.Before(b) {
			return
		}
		if n := len(out); n > 0 && out[n-1].Kind == kind && out[n-1].To.Equal(a) {
			out[n-1].To = b
			return
		}
		out = append(out, providerPiece{Kind: kind, From: a, To: b})
	}
	// short reads [a, b), less than an hour inside one day of the zone,
	// in whole quarter hours where it can (a midnight today is on a
	// quarter hour in every zone) and minutes for the rest.
	short := func(a, b time.Time) {
		qa, qb := a.Truncate(15*time.Minute), b.Truncate(15*time.Minute)
		if qa.Before(a) {
			qa = qa.Add(15 * time.Minute)
		}
		if !qa.Before(qb) {
			add(pieceMinute, a, b)
			return
		}
		add(pieceMinute, a, qa)
		add(pieceQuarter, qa, qb)
		add(pieceMinute, qb, b)
	}
	for a := from; a.Before(to); {
		b := nextDayStart(a, loc)
		if b.After(to) {
			b = to
		}
		// A UTC day whose date is the zone's date at both ends is one of
		// the zone's days: the day roll-up labels it right.
		if a.Equal(a.Truncate(24*time.Hour)) && b.Sub(a) == 24*time.Hour &&
			a.In(loc).Format(time.DateOnly) == a.UTC().Format(time.DateOnly) &&
			b.In(loc).Format(time.DateOnly) == b.UTC().Format(time.DateOnly) {
			add(pieceDay, a, b)
			a = b
			continue
		}
		ha, hb := a.Truncate(time.Hour), b.Truncate(time.Hour)
		if ha.Before(a) {
			ha = ha.Add(time.Hour)
		}
		if ha.Before(hb) {
			short(a, ha)
			add(pieceHour, ha, hb)
			short(hb, b)
		} else {
			short(a, b)
		}
		a = b
	}
	return out
}

// The roll-ups a source reads for each kind of piece.
var (
	// apiRoutes: by API, route, method and status class (0006, 0007);
	// quarter hours from the minutes.
	apiRoutes = [...]string{pieceDay: "usage_api_day", pieceHour: "usage_api_hour", pieceQuarter: "usage_api_minute", pieceMinute: "usage_api_minute"}
	// apiClasses: by API and status class (0008); the days and the
	// minutes from the roll-ups by route (few rows either way).
	apiClasses = [...]string{pieceDay: "usage_api_day", pieceHour: "usage_api_class_hour", pieceQuarter: "usage_api_class_quarter",
		pieceMinute: "usage_api_minute"}
	// apiConsumers: by API and subject (0006, 0007); quarter hours from
	// the minutes.
	apiConsumers = [...]string{pieceDay: "usage_api_consumer_day", pieceHour: "usage_api_consumer_hour", pieceQuarter: "usage_api_consumer_minute",
		pieceMinute: "usage_api_consumer_minute"}
)

// providerSource is a subquery over tables (one per kind of piece) holding
// cols and day (String, 2006-01-02 in zone) for pieces (providerPieces in
// zone), each table read once.
//
// Days are read as ranges of the sorting key's second column (few: whole
// UTC days run together). The other kinds avoid many ranges (bucketsOf):
// ClickHouse 18.16 analyses an OR of many ranges in time that grows faster
// than their number (a 400-day window in Asia/Kolkata has about 400 hour
// and 400 quarter-hour ranges: 17 s before reading a row), and each range
// costs about a millisecond to read even when small.
func providerSource(tables [4]string, cols string, q ProviderQuery, pieces []providerPiece, zone string) string {
	apis := "'" + strings.Join(q.APIs, "', '") + "'"
	byKind := map[int][]providerPiece{}
	for _, p := range pieces {
		byKind[p.Kind] = append(byKind[p.Kind], p)
	}
	var parts []string
	for kind := pieceDay; kind <= pieceMinute; kind++ {
		ps := byKind[kind]
		if len(ps) == 0 {
			continue
		}
		if kind == pieceDay {
			var ranges []string
			for _, p := range ps {
				ranges = append(ranges, fmt.Sprintf("bucket >= %s AND bucket < %s", sqlDate(p.From), sqlDate(p.To)))
			}
			for chunk := range slices.Chunk(ranges, maxRangesPerSelect) {
				parts = append(parts, fmt.Sprintf("SELECT toString(bucket) AS day, %s FROM %s WHERE api_id IN (%s) AND (%s)",
					cols, tables[kind], apis, strings.Join(chunk, " OR ")))
			}
			continue
		}
		parts = append(parts, fmt.Sprintf("SELECT toString(toDate(bucket, '%s')) AS day, %s FROM %s WHERE api_id IN (%s) AND %s",
			zone, cols, tables[kind], apis, bucketsOf(ps, bucketOf(tables[kind]), keyedByQuarterOfDay[tables[kind]])))
	}
	return "(" + strings.Join(parts, " UNION ALL ") + ")"
}

// maxRangesPerSelect bounds the day ranges one SELECT of providerSource
// ORs (see there).
const maxRangesPerSelect = 32

// bucketOf is the bucket of a roll-up by its name (a kind of piece may be
// read from a finer one: quarter hours from minutes).
func bucketOf(table string) time.Duration {
	switch {
	case strings.HasSuffix(table, "_hour"):
		return time.Hour
	case strings.HasSuffix(table, "_quarter"):
		return 15 * time.Minute
	default:
		return time.Minute
	}
}

// keyedByQuarterOfDay names the roll-ups sorted by api_id, then by the
// quarter of the UTC day of their bucket (0008).
var keyedByQuarterOfDay = map[string]bool{"usage_api_class_quarter": true}

// quarterOfDay is the sorting expression of those roll-ups.
const quarterOfDay = "intDiv(toUInt32(bucket) % 86400, 900)"

// bucketsOf is the condition on bucket that keeps the buckets (of step)
// of pieces, ascending and apart: one range from the first to the last
// without the buckets left out when they are fewer than those kept; else
// that range with the buckets kept, on a table sorted by quarter of the
// day; else the pieces' ranges (few: a window's ends, cut at UTC
// midnights or at whole hours of a zone, have at most a handful of pieces
// of a kind that are not mostly kept, except quarter hours).
func bucketsOf(pieces []providerPiece, step time.Duration, quarterKeyed bool) string {
	from, to := pieces[0].From, pieces[len(pieces)-1].To
	var kept, left []string
	quarters := map[int64]bool{}
	at := from
	for _, p := range pieces {
		for ; at.Before(p.From); at = at.Add(step) {
			left = append(left, strconv.FormatInt(at.Unix(), 10))
		}
		for ; at.Before(p.To); at = at.Add(step) {
			kept = append(kept, strconv.FormatInt(at.Unix(), 10))
			quarters[at.Unix()%86400/900] = true
		}
	}
	cond := fmt.Sprintf("bucket >= %d AND bucket < %d", from.Unix(), to.Unix())
	switch {
	case len(left) == 0:
		return cond
	case len(left) <= len(kept):
		// Mostly kept (the hours of an offset zone's days): read them all
		// and drop the few.
		return cond + " AND toUInt32(bucket) NOT IN (" + strings.Join(left, ", ") + ")"
	case quarterKeyed || len(pieces) > maxRangesPerSelect:
		// The quarter hours around midnights: the same quarters of each
		// day, whose runs the sorting key finds.
		// (Or too many pieces for an OR: minutes around midnights that
		// were not on a quarter hour, decades ago.)
		cond += " AND toUInt32(bucket) IN (" + strings.Join(kept, ", ") + ")"
		if !quarterKeyed {
			return cond
		}
		var qs []string
		for _, q := range slices.Sorted(maps.Keys(quarters)) {
			qs = append(qs, strconv.FormatInt(q, 10))
		}
		return cond + " AND " + quarterOfDay + " IN (" + strings.Join(qs, ", ") + ")"
	}
	// Mostly left out (the ends of a window): the pieces' own ranges.
	var ranges []string
	for _, p := range pieces {
		ranges = append(ranges, fmt.Sprintf("bucket >= %d AND bucket < %d", p.From.Unix(), p.To.Unix()))
	}
	return "(" + strings.Join(ranges, " OR ") + ")"
}

// Kinds of the rows of the figures query (its first column).
const (
	providerTotal = 1
	providerDay   = 2
	providerRoute = 3
	providerAPI   = 4
)

// Parts of the provider figures, each one query.
type figurePart int

const (
	// partAll: everything, when the zone's days are UTC days (UTC, or a
	// zone at UTC+0 throughout the window): one read of the roll-ups by
	// route, mostly whole days.
	partAll figurePart = iota
	// partDays: the days of another zone, from the roll-ups by status
	// class over its pieces (hours, and minutes around its midnights).
	partDays
	// partRest: the total, the routes and the APIs of a window in
	// another zone, which need no day of it: the roll-ups by route over
	// pieces cut at UTC midnights.
	partRest
)

// providerFiguresSQL reads the window's roll-up rows once and groups them
// several ways at once (ARRAY JOIN over grouping tuples), so that each
// row's states are read once; LIMIT BY bounds each kind (days by the
// window, APIs by MaxProviderAPIs, routes cut to Top by the caller). No
// alias repeats a column name (18.16 would substitute it). Merging latency
// states costs about as much per call as per row below 5,670 calls a row
// (quantilesTiming keeps the values), so what is grouped by day of an
// offset zone (hours of about a thousand calls each) is read once for the
// days alone, and the rest from whole UTC days.
func providerFiguresSQL(q ProviderQuery, part figurePart) string {
	const routeCols = "api_id, route, method, status_class, requests, units, latency_ms"
	total := fmt.Sprintf("(toUInt8(%d), '', '')", providerTotal)
	day := fmt.Sprintf("(toUInt8(%d), day, '')", providerDay)
	route := fmt.Sprintf("(toUInt8(%d), method, route)", providerRoute)
	api := fmt.Sprintf(", (toUInt8(%d), api_id, '')", providerAPI)
	if !q.ByAPI {
		api = ""
	}
	var src, groups string
	switch part {
	case partAll:
		src, groups = providerSource(apiRoutes, routeCols, q, q.pieces, q.Zone), total+", "+day+", "+route+api
	case partDays:
		src, groups = providerSource(apiClasses, "status_class, requests, units, latency_ms", q, q.pieces, q.Zone), day
	case partRest:
		src, groups = providerSource(apiRoutes, routeCols, q, q.utcPieces, "UTC"), total+", "+route+api
	}
	return fmt.Sprintf(`SELECT g.1 AS kind, g.2 AS key1, g.3 AS key2,
    countMerge(requests) AS calls,
    countMergeIf(requests, status_class = 5) AS server_errors,
    countMergeIf(requests, status_class = 4) AS client_errors,
    sumMerge(units) AS units_sum,
    arrayMap(x -> toFloat64(x), quantilesTimingMerge(0.5, 0.9, 0.99)(latency_ms)) AS latency
FROM %s
ARRAY JOIN [%s] AS g
GROUP BY kind, key1, key2
ORDER BY kind, calls DESC, key1, key2
LIMIT %d BY kind`, src, groups, MaxProviderAPIs)
}

// providerFigures reads providerFiguresSQL(q, part) into out. partDays
// and partRest run at once and fill different fields.
func providerFigures(ctx context.Context, conn driver.Conn, q ProviderQuery, out *ProviderReport, part figurePart) error {
	rows, err := conn.Query(ctx, providerFiguresSQL(q, part))
	if err != nil {
		return fmt.Errorf("read provider analytics: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			kind       uint8
			key1, key2 string
			s          ProviderStats
			lat        []float64
		)
		if err := rows.Scan(&kind, &key1, &key2, &s.Calls, &s.ServerErrors, &s.ClientErrors, &s.Units, &lat); err != nil {
			return fmt.Errorf("scan provider analytics: %w", err)
		}
		s.Latency = latencyOf(lat)
		switch kind {
		case providerTotal:
			out.Total = s
		case providerDay:
			out.Days = append(out.Days, ProviderDay{Day: key1, ProviderStats: s})
		case providerRoute:
			if len(out.Routes) < q.Top {
				out.Routes = append(out.Routes, ProviderRoute{Method: key1, Route: key2, ProviderStats: s})
			}
		case providerAPI:
			out.APIs = append(out.APIs, ProviderAPI{APIID: key1, ProviderStats: s})
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read provider analytics: %w", err)
	}
	// Routes came busiest first (ORDER BY), the rest by key.
	if part != partRest {
		slices.SortFunc(out.Days, func(a, b ProviderDay) int { return strings.Compare(a.Day, b.Day) })
	}
	if part != partDays {
		slices.SortFunc(out.APIs, func(a, b ProviderAPI) int { return strings.Compare(a.APIID, b.APIID) })
	}
	return nil
}

// latencyOf reads p50, p90, p99; an empty group merges to NaN.
func latencyOf(v []float64) Latency {
	get := func(i int) float64 {
		if i >= len(v) || math.IsNaN(v[i]) || math.IsInf(v[i], 0) {
			return 0
		}
		return v[i]
	}
	return Latency{P50: get(0), P90: get(1), P99: get(2)}
}

// providerConsumersSQL reads the window's roll-up rows once (cut at UTC
// midnights, whatever the zone: nothing here is by day), sums them per API
// and subject, and groups those sums two ways (ARRAY JOIN): per subject
// (kind 1: calls and units, busiest first) and per API and in all (kind 2,
// key the API, or empty for all: unique subjects). LIMIT BY bounds each
// kind; the caller cuts kind 1 to Top.
func providerConsumersSQL(q ProviderQuery) string {
	src := providerSource(apiConsumers, "api_id, subject, requests, units", q, q.utcPieces, "UTC")
	return fmt.Sprintf(`SELECT g.1 AS kind, g.2 AS key, sum(c) AS calls_sum, sum(u) AS units_sum, toUInt64(uniqExact(subject)) AS uniq_subjects
FROM (SELECT api_id, subject, countMerge(requests) AS c, sumMerge(units) AS u FROM %s GROUP BY api_id, subject)
ARRAY JOIN [(toUInt8(1), subject), (toUInt8(2), api_id), (toUInt8(2), '')] AS g
GROUP BY kind, key
ORDER BY kind, calls_sum DESC, key
LIMIT %d BY kind`, src, max(q.Top, MaxProviderAPIs+1))
}

func providerConsumers(ctx context.Context, conn driver.Conn, q ProviderQuery, out *ProviderReport, unique map[string]uint64) error {
	rows, err := conn.Query(ctx, providerConsumersSQL(q))
	if err != nil {
		return fmt.Errorf("read provider consumers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			kind        uint8
			key         string
			calls, uniq uint64
			units       decimal.Decimal
		)
		if err := rows.Scan(&kind, &key, &calls, &units, &uniq); err != nil {
			return fmt.Errorf("scan provider consumers: %w", err)
		}
		switch {
		case kind == 2:
			unique[key] = uniq
		case len(out.Consumers) < q.Top:
			out.Consumers = append(out.Consumers, ProviderConsumer{Subject: key, Calls: calls, Units: units})
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read provider consumers: %w", err)
	}
	slices.SortFunc(out.Consumers, func(a, b ProviderConsumer) int {
		return cmp.Or(cmp.Compare(b.Calls, a.Calls), strings.Compare(a.Subject, b.Subject))
	})
	return nil
}
