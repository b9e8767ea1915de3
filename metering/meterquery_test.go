package metering_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// pathSegments are the pieces random paths are made of: plain text, dot
// segments and their near misses, empty segments (a//b, a trailing /),
// every RE2 metacharacter, a backslash, non-ASCII text, control bytes (a
// trailing newline, which $ must not match before) and
// text that looks like a pattern's {name} or *.
var pathSegments = []string{
	"a", "b", "A", "users", "42", "v1",
	".", "..", "...", ".a", "a.", "..a", "a.b", "",
	".+*?()[]{}|^$\\", "x+y", "(a)", "[b]", "{c}", "a|b", "^$", `\`, `\x2e`, "?", ".*", "*",
	"é", "日本", "%2F", "a\x00b", "a\nb", "a\n", "\n", "\t",
}

// randomPath builds a path from pathSegments, now and then without its
// leading slash (which matches no pattern).
func randomPath(r *rand.Rand) string {
	segs := make([]string, r.IntN(5))
	for i := range segs {
		segs[i] = pathSegments[r.IntN(len(pathSegments))]
	}
	p := "/" + strings.Join(segs, "/")
	if r.IntN(30) == 0 {
		p = strings.TrimPrefix(p, "/")
	}
	return p
}

// randomRoute returns a valid route pattern: most often one derived from
// path, so that it matches it or nearly does (each segment kept, or turned
// into {name} or *, or the rest of the path into a trailing *), otherwise
// one built from random segments.
func randomRoute(r *rand.Rand, path string) string {
	for {
		var segs []string
		if r.IntN(4) > 0 && strings.HasPrefix(path, "/") {
		derive:
			for _, s := range strings.Split(path[1:], "/") {
				switch r.IntN(8) {
				case 0:
					s = "{id}"
				case 1:
					s = "*"
				case 2:
					segs = append(segs, "*")
					break derive
				}
				segs = append(segs, s)
			}
		} else {
			segs = make([]string, r.IntN(4))
			for i := range segs {
				switch r.IntN(4) {
				case 0:
					segs[i] = "{x}"
				case 1:
					segs[i] = "*"
				default:
					segs[i] = pathSegments[r.IntN(len(pathSegments))]
				}
			}
		}
		if p := joinRoute(segs); enforcement.ValidRoute(p) == nil {
			return p
		}
	}
}

func joinRoute(segs []string) string { return "/" + strings.Join(segs, "/") }

// TestRouteRegexpMatchesMatchRoute: over random patterns and paths, the
// regexp RouteRegexp writes (compiled by Go's regexp, RE2 like ClickHouse's)
// matches exactly the paths enforcement.MatchRoute matches. The paths are
// valid UTF-8, as every event's path is.
func TestRouteRegexpMatchesMatchRoute(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 15))
	var matched int
	for range 20000 {
		path := randomPath(r)
		route := randomRoute(r, path)
		if r.IntN(3) == 0 {
			path = randomPath(r)
		}
		want := enforcement.MatchRoute(route, path)
		if got := routeMatches(t, route, path); got != want {
			re, _ := metering.RouteRegexp(route)
			t.Fatalf("route %q, path %q: regexp %q matches = %v, MatchRoute = %v", route, path, re, got, want)
		}
		if want {
			matched++
		}
	}
	// A generator that never matches would prove nothing.
	if matched < 2000 {
		t.Fatalf("only %d of 20000 random cases matched; the generator is off", matched)
	}
}

// TestRouteRegexpCases: the documented cases of the route syntax, with
// RE2's metacharacters and dot segments.
func TestRouteRegexpCases(t *testing.T) {
	for _, c := range []struct {
		route string
		yes   []string
		no    []string
	}{
		{"/users/{id}", []string{"/users/42", "/users/.a", "/users/...", "/users/é"}, []string{"/users/", "/users/42/orders", "/users", "/users/.", "/users/..", "/Users/42", "users/42"}},
		{"/forecast/*", []string{"/forecast/", "/forecast/a/b", "/forecast/a//b/", "/forecast/..a/"}, []string{"/forecast", "/forecast/./a", "/forecast/a/..", "/forecastx/a"}},
		{"/", []string{"/"}, []string{"/a", "//"}},
		{"/*", []string{"/", "/a", "/a/b/"}, []string{"/.", "/a/../b", "a"}},
		{"/a/", []string{"/a/"}, []string{"/a", "/a/b", "/a//"}},
		{"/a.b", []string{"/a.b"}, []string{"/axb", "/a.bb"}},
		{`/.+?()[]|^$\/x`, []string{`/.+?()[]|^$\/x`}, []string{"/a/x", `/.+?()[]|^$/x`, "/./x"}},
		{"/a\x00b/{id}", []string{"/a\x00b/1"}, []string{"/ab/1", "/a\x00b/"}},
		{"/日本/*/z", []string{"/日本/x/z"}, []string{"/日本/x/y/z", "/日本//z"}},
	} {
		for _, p := range c.yes {
			if !routeMatches(t, c.route, p) || !enforcement.MatchRoute(c.route, p) {
				t.Errorf("route %q should match %q", c.route, p)
			}
		}
		for _, p := range c.no {
			if routeMatches(t, c.route, p) || enforcement.MatchRoute(c.route, p) {
				t.Errorf("route %q should not match %q", c.route, p)
			}
		}
	}
}

// TestRouteRegexpRefuses: a pattern MatchRoute would never match, or that
// ClickHouse could not compile, is an error rather than a regexp.
func TestRouteRegexpRefuses(t *testing.T) {
	for _, p := range []string{"", "a", "/a//b", "/./a", "/a/{", "/a*", "/\xff"} {
		if re, err := metering.RouteRegexp(p); err == nil {
			t.Errorf("RouteRegexp(%q) = %q, want an error", p, re)
		}
	}
}

// FuzzRouteRegexp holds RouteRegexp to MatchRoute on any valid pattern
// and any valid UTF-8 path.
func FuzzRouteRegexp(f *testing.F) {
	f.Add("/users/{id}", "/users/42")
	f.Add("/forecast/*", "/forecast/a/./b")
	f.Add(`/a.b/(c)/*`, `/a.b/(c)/`)
	f.Add("/x", "/x/")
	f.Fuzz(func(t *testing.T, route, path string) {
		if enforcement.ValidRoute(route) != nil || !utf8.ValidString(route) || !utf8.ValidString(path) {
			return
		}
		if got, want := routeMatches(t, route, path), enforcement.MatchRoute(route, path); got != want {
			t.Fatalf("route %q, path %q: regexp matches = %v, MatchRoute = %v", route, path, got, want)
		}
	})
}

func routeMatches(t testing.TB, route, path string) bool {
	t.Helper()
	re, err := metering.RouteRegexp(route)
	if err != nil {
		t.Fatalf("RouteRegexp(%q): %v", route, err)
	}
	return regexp.MustCompile(re).MatchString(path)
}

// randomMeter is a valid meter of any aggregation and field, with a random
// filter whose routes come from paths (so they match some events).
func randomMeter(r *rand.Rand, slug string, paths []string) metering.Meter {
	m := metering.Meter{Slug: slug}
	switch r.IntN(4) {
	case 0:
		m.Aggregation = metering.AggCount
	case 1, 2:
		m.Aggregation = []metering.Aggregation{metering.AggSum, metering.AggMax}[r.IntN(2)]
		m.Field = []string{metering.FieldUnits, metering.FieldRequestBytes, metering.FieldResponseBytes, metering.FieldLatencyMS}[r.IntN(4)]
	default:
		m.Aggregation, m.Field = metering.AggUniqueCount, metering.FieldKeyID
	}
	pick := func(from []string) []string {
		var out []string
		for _, s := range from {
			if r.IntN(3) == 0 {
				out = append(out, s)
			}
		}
		return out
	}
	if r.IntN(2) == 0 {
		m.Filter.Methods = pick(metering.Methods)
	}
	if r.IntN(2) == 0 {
		m.Filter.StatusClasses = pick(metering.StatusClasses)
	}
	if r.IntN(3) > 0 {
		for range 1 + r.IntN(3) {
			if route := randomRoute(r, paths[r.IntN(len(paths))]); !slices.Contains(m.Filter.Routes, route) {
				m.Filter.Routes = append(m.Filter.Routes, route)
			}
		}
	}
	return m
}

// randomEvent is an event of subject at a random second of [start,
// start+span): random method (with some no filter names), path, status (0,
// every class, 5xx), a refusal now and then, units with up to 6 decimals,
// byte counts up to the largest the decoder accepts, and a key from a few.
func randomEvent(r *rand.Rand, i int, subject string, start time.Time, span time.Duration) usage.Event {
	methods := append(slices.Clone(metering.Methods), "TRACE", "get")
	statuses := []uint16{0, 100, 101, 199, 200, 201, 204, 299, 301, 304, 400, 404, 429, 499, 500, 502, 503, 599}
	keys := []string{"", "key_1", "key_2", "key_3", "key_4", "KEY_1"}
	e := usage.Event{
		ID:      fmt.Sprintf("e%d", i),
		Source:  "/test",
		Type:    usage.TypeAPIRequest,
		Subject: subject,
		Time:    start.Add(time.Duration(r.Int64N(int64(span/time.Second))) * time.Second),
		Data: usage.Data{
			APIID:         "api_1",
			KeyID:         keys[r.IntN(len(keys))],
			Method:        methods[r.IntN(len(methods))],
			Path:          randomPath(r),
			Status:        statuses[r.IntN(len(statuses))],
			LatencyMS:     r.Uint32(),
			RequestBytes:  r.Uint64N(1 << 53),
			ResponseBytes: r.Uint64N(1 << uint(r.IntN(54))),
			Units:         decimal.New(r.Int64N(1_000_000_000_000_000), -6),
		},
	}
	switch r.IntN(10) {
	case 0:
		e.Data.Refusal = "rate_limited"
	case 1:
		e.Data.Units = decimal.New(r.Int64N(1000), 0)
	}
	return e
}

// goMeterTotals folds events the way the processors do, through
// Meter.Contribution and Meter.KeyValue: the reference MeterTotals must
// agree with. Sums are exact decimals (a sum of byte counts passes int64).
func goMeterTotals(meters []metering.Meter, events []usage.Event, subject string, from, to time.Time, watermarks map[int32]int64) map[string]decimal.Decimal {
	from, to = from.Truncate(time.Second), to.Truncate(time.Second)
	out := make(map[string]decimal.Decimal, len(meters))
	for _, m := range meters {
		sum, highest := decimal.Zero, int64(0)
		keys := map[string]bool{}
		for i := range events {
			e := &events[i]
			if e.Subject != subject || e.Time.Before(from) || !e.Time.Before(to) {
				continue
			}
			if part, offset := eventOffset(i); watermarks != nil && offset > watermarks[part] {
				if _, listed := watermarks[part]; listed {
					continue
				}
			}
			if k := m.KeyValue(e); k != "" {
				keys[k] = true
			}
			if v, ok := m.Contribution(e); ok {
				sum = sum.Add(decimal.NewFromInt(v))
				highest = max(highest, v)
			}
		}
		switch m.Aggregation {
		case metering.AggUniqueCount:
			out[m.Slug] = decimal.NewFromInt(int64(len(keys)))
		case metering.AggMax:
			out[m.Slug] = m.Quantity(highest)
		default:
			out[m.Slug] = sum.Shift(-m.Scale())
		}
	}
	return out
}

// TestMeterTotalsAgreesWithContribution: thousands of random events of
// two subscriptions in ClickHouse, hundreds of random meters of every
// aggregation, field and filter; for windows that take all the data, cut
// it, or hold none, MeterTotals equals the fold over Meter.Contribution and
// Meter.KeyValue exactly, for every meter.
func TestMeterTotalsAgreesWithContribution(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 15))

	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	span := 48 * time.Hour
	events := make([]usage.Event, 4000)
	for i := range events {
		subject := "sub_a"
		if i%5 == 0 {
			subject = "sub_b"
		}
		events[i] = randomEvent(r, i, subject, start, span)
	}
	insertMeterEvents(t, conn, events)

	paths := make([]string, len(events))
	for i := range events {
		paths[i] = events[i].Data.Path
	}
	meters := make([]metering.Meter, 200)
	for i := range meters {
		meters[i] = randomMeter(r, fmt.Sprintf("m%d", i), paths)
		if err := meters[i].Validate(); err != nil {
			t.Fatalf("generated meter %+v: %v", meters[i], err)
		}
	}

	type window struct {
		from, to   time.Time
		watermarks map[int32]int64
	}
	cut := func() time.Time { return start.Add(time.Duration(r.Int64N(int64(span)))) }
	end := start.Add(span)
	last := int64(len(events) / 3)
	windows := []window{
		{start, end, nil},
		{start.Add(-time.Hour), end.Add(time.Hour), nil},
		{start.Add(12 * time.Hour), start.Add(36 * time.Hour), nil},
		{end, end.Add(span), nil},                                       // no data
		{time.Time{}, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), nil}, // all time
		{start.Add(time.Hour + 500*time.Millisecond), start.Add(2*time.Hour + 999*time.Millisecond), nil},
		// Watermarks: every partition cut, one left out (all its rows
		// count), all at or past the last offset (nothing left out).
		{start, end, map[int32]int64{0: r.Int64N(last), 1: r.Int64N(last), 2: 0}},
		{start, end, map[int32]int64{1: r.Int64N(last)}},
		{start, end, map[int32]int64{0: last, 1: last + 1, 2: 1 << 40}},
	}
	for range 5 {
		a, b := cut(), cut()
		if b.Before(a) {
			a, b = b, a
		}
		windows = append(windows, window{a, b, map[int32]int64{0: r.Int64N(last), 2: r.Int64N(last)}}, window{a, b, nil})
	}
	// Every window for sub_a; for the others, whose rows sub_a's query
	// must leave out, a few: ClickHouse 18.16 takes over a tenth of a
	// second to plan a query of 200 meters.
	checks := map[string][]window{"sub_a": windows, "sub_b": windows[:3], "sub_none": windows[:1]}
	nonzero := 0
	for _, subject := range []string{"sub_a", "sub_b", "sub_none"} {
		for _, w := range checks[subject] {
			var got map[string]decimal.Decimal
			var err error
			if w.watermarks == nil {
				got, err = metering.MeterTotals(ctx, conn, subject, meters, w.from, w.to)
			} else {
				got, err = metering.MeterTotalsUpTo(ctx, conn, subject, meters, w.from, w.to, w.watermarks)
			}
			if err != nil {
				t.Fatalf("MeterTotals(%s, %s, %s, %v): %v", subject, w.from, w.to, w.watermarks, err)
			}
			want := goMeterTotals(meters, events, subject, w.from, w.to, w.watermarks)
			if len(got) != len(want) {
				t.Fatalf("MeterTotals(%s, %s, %s) has %d meters, want %d", subject, w.from, w.to, len(got), len(want))
			}
			for _, m := range meters {
				if !got[m.Slug].Equal(want[m.Slug]) {
					t.Errorf("subject %s, [%s, %s), watermarks %v: meter %q = %s, want %s", subject, w.from, w.to, w.watermarks, m, got[m.Slug], want[m.Slug])
				}
				if subject == "sub_a" && !want[m.Slug].IsZero() {
					nonzero++
				}
			}
		}
	}
	checkBatch(t, conn, meters, events, start, end, r.Int64N(last))

	// Most meters select something; a run where they did not would prove
	// little about the filters.
	t.Logf("%d of sub_a's %d meter values are non-zero", nonzero, len(meters)*len(windows))
	if nonzero < len(meters)*len(windows)/2 {
		t.Fatalf("only %d of sub_a's %d meter values are non-zero; the generator is off", nonzero, len(meters)*len(windows))
	}
}

// checkBatch: one MeterTotalsBatch over the subjects of
// TestMeterTotalsAgreesWithContribution, each with its own meters (some
// sharing a definition under other slugs), window and watermarks (on
// different partitions, so each must apply to its own subject only),
// agrees with the Go fold for each.
func checkBatch(t *testing.T, conn driver.Conn, meters []metering.Meter, events []usage.Event, start, end time.Time, offset int64) {
	t.Helper()
	renamed := slices.Clone(meters[:50])
	for i := range renamed {
		renamed[i].Slug = "other-" + renamed[i].Slug
	}
	windows := []metering.MeterWindow{
		{Subject: "sub_a", Meters: meters[:120], From: start.Add(6 * time.Hour), To: end.Add(-6 * time.Hour), Watermarks: map[int32]int64{0: offset}},
		{Subject: "sub_b", Meters: append(slices.Clone(meters[100:]), renamed...), From: start, To: end, Watermarks: map[int32]int64{1: offset / 2}},
		{Subject: "sub_none", Meters: meters[:3], From: start, To: end},
		{Subject: "sub_without_meters", From: start, To: end},
	}
	got, err := metering.MeterTotalsBatch(t.Context(), conn, windows)
	if err != nil {
		t.Fatalf("MeterTotalsBatch: %v", err)
	}
	if len(got) != len(windows) {
		t.Fatalf("MeterTotalsBatch answered %d windows, want %d", len(got), len(windows))
	}
	for i, w := range windows {
		want := goMeterTotals(w.Meters, events, w.Subject, w.From, w.To, w.Watermarks)
		if len(got[i]) != len(want) {
			t.Errorf("batch, subject %s: %d meters, want %d", w.Subject, len(got[i]), len(want))
		}
		for _, m := range w.Meters {
			if !got[i][m.Slug].Equal(want[m.Slug]) {
				t.Errorf("batch, subject %s: meter %q = %s, want %s", w.Subject, m, got[i][m.Slug], want[m.Slug])
			}
		}
	}
}

// TestMeterTotalsRefuses: a batch that cannot be answered meter by meter
// is refused before any query (so no connection is needed).
func TestMeterTotalsRefuses(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	count := metering.Meter{Slug: "calls", Aggregation: metering.AggCount}
	for _, c := range []struct {
		name    string
		windows []metering.MeterWindow
	}{
		{"invalid meter", []metering.MeterWindow{{Subject: "s", Meters: []metering.Meter{{Slug: "Calls", Aggregation: metering.AggCount}}}}},
		{"invalid route", []metering.MeterWindow{{Subject: "s", Meters: []metering.Meter{{Slug: "c", Aggregation: metering.AggCount, Filter: metering.Filter{Routes: []string{"/a/../b"}}}}}}},
		{"slug twice", []metering.MeterWindow{{Subject: "s", Meters: []metering.Meter{count, count}}}},
		{"subject twice", []metering.MeterWindow{{Subject: "s", Meters: []metering.Meter{count}}, {Subject: "s", Meters: []metering.Meter{count}}}},
	} {
		if _, err := metering.MeterTotalsBatch(t.Context(), nil, c.windows); err == nil {
			t.Errorf("%s: MeterTotalsBatch succeeded, want an error", c.name)
		}
	}
	got, err := metering.MeterTotals(t.Context(), nil, "s", nil, at, at.Add(time.Hour))
	if err != nil || len(got) != 0 {
		t.Errorf("MeterTotals without meters = %v, %v; want an empty answer without a query", got, err)
	}
}

// eventOffset is where the i-th event of a test came from: three Kafka
// partitions in turn, offsets counting up in each.
func eventOffset(i int) (partition int32, offset int64) {
	return int32(i % 3), int64(i / 3)
}

// insertMeterEvents writes events to usage_events in one batch, each
// from the partition and offset eventOffset gives it.
func insertMeterEvents(t testing.TB, conn driver.Conn, events []usage.Event) {
	t.Helper()
	batch, err := conn.PrepareBatch(context.Background(), "INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, refusal, kafka_partition, kafka_offset)")
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range events {
		d := &e.Data
		part, offset := eventOffset(i)
		if err := batch.Append(e.ID, e.Source, e.Type, e.Subject, e.Time, d.APIID, d.KeyID, d.Method, d.Route, d.Path, d.Status, d.LatencyMS, d.RequestBytes, d.ResponseBytes, d.Units, d.Refusal, part, offset); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

// TestMeterTotalsLargestFilters: meters at the limits of Validate, each
// with 8 route patterns of 512 bytes, the 4096 bytes a meter's routes
// hold together (wildcards only, or literal text made
// of RE2 metacharacters and backslashes), together far longer than
// ClickHouse's default max_query_size once bound: MeterTotals still
// answers, and agrees with the Go fold.
func TestMeterTotalsLargestFilters(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	metachars := `\.+?()[]|^$`
	var meters []metering.Meter
	var paths []string
	for i := range 12 {
		m := metering.Meter{Slug: fmt.Sprintf("big%d", i), Aggregation: metering.AggCount}
		for j := range enforcement.MaxMeterRoutesBytes / enforcement.MaxMeterRouteBytes {
			var route string
			if i%2 == 0 {
				route = strings.Repeat("/*", 254) + fmt.Sprintf("/x%02d", j)
			} else {
				b := []byte(fmt.Sprintf("/%02d", j))
				for len(b) < 512 {
					b = append(b, metachars[(i+len(b))%len(metachars)])
				}
				route = string(b)
			}
			m.Filter.Routes = append(m.Filter.Routes, route)
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("meter %d: %v", i, err)
		}
		meters = append(meters, m)
		paths = append(paths, m.Filter.Routes[i%len(m.Filter.Routes)], strings.Repeat("/a", 254)+"/x03", strings.Repeat("/a", 256))
	}
	var events []usage.Event
	for i, p := range paths {
		events = append(events, usage.Event{
			ID: fmt.Sprintf("e%d", i), Source: "/test", Type: usage.TypeAPIRequest, Subject: "sub_big",
			Time: start.Add(time.Duration(i) * time.Second),
			Data: usage.Data{APIID: "api_1", Method: "GET", Path: p, Status: 200},
		})
	}
	insertMeterEvents(t, conn, events)
	got, err := metering.MeterTotals(ctx, conn, "sub_big", meters, start, start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := goMeterTotals(meters, events, "sub_big", start, start.Add(time.Hour), nil)
	for _, m := range meters {
		if !got[m.Slug].Equal(want[m.Slug]) || want[m.Slug].IsZero() {
			t.Errorf("meter %s = %s, want %s (non-zero)", m.Slug, got[m.Slug], want[m.Slug])
		}
	}
}

// BenchmarkMeterTotals: one subscription's 5 meters (a count, a filtered
// sum of units, a max of latency over 2xx, a sum of response bytes over
// two routes, distinct keys) over a window of 10^6 events of that
// subscription, written by ClickHouse itself.
func BenchmarkMeterTotals(b *testing.B) {
	conn, _, _ := testenv.ClickHouseDB(b)
	const events = 1_000_000
	err := conn.Exec(b.Context(), `INSERT INTO usage_events
		(id, source, type, subject, time, api_id, key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, refusal)
		SELECT toString(number), '/bench', 'veil.api.request', 'sub_bench',
			toDateTime('2026-03-01 00:00:00') + number, 'api_1',
			concat('key_', toString(number % 50)),
			['GET', 'POST', 'PUT'][number % 3 + 1],
			'/users/{id}',
			concat(['/users/', '/files/', '/other/'][number % 3 + 1], toString(number % 1000)),
			toUInt16([200, 201, 404, 500, 301][number % 5 + 1]),
			toUInt32(number % 997),
			number % 4096,
			number % 65536,
			toDecimal64(number % 1000, 6) / 1000,
			if(number % 50 = 0, 'rate_limited', '')
		FROM numbers(`+fmt.Sprint(events)+`)`)
	if err != nil {
		b.Fatal(err)
	}
	meters := []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits, Filter: metering.Filter{Methods: []string{"GET", "POST"}}},
		{Slug: "slowest", Aggregation: metering.AggMax, Field: metering.FieldLatencyMS, Filter: metering.Filter{StatusClasses: []string{"2xx"}}},
		{Slug: "egress", Aggregation: metering.AggSum, Field: metering.FieldResponseBytes, Filter: metering.Filter{Routes: []string{"/users/{id}", "/files/*"}}},
		{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID},
	}
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 1, 0)
	var got map[string]decimal.Decimal
	for b.Loop() {
		if got, err = metering.MeterTotals(b.Context(), conn, "sub_bench", meters, from, to); err != nil {
			b.Fatal(err)
		}
	}
	// 2% refused (all with a 200), 20% with a 500: 780,000 billable calls.
	if !got["calls"].Equal(decimal.NewFromInt(780_000)) {
		b.Fatalf("calls = %s, want 780000", got["calls"])
	}
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestMeterTotalsHostileSubjects: subjects are bound, never spliced: ones
// with quotes, backslashes, a NUL, a slash (which the watermark keys use as
// a separator) or SQL of their own are answered like any other.
func TestMeterTotalsHostileSubjects(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	subjects := []string{`s'1`, `s\'2`, "s\x003", "s/4", `s'); DROP TABLE usage_events; --`, `@from`}
	var events []usage.Event
	for i, s := range subjects {
		for j := range i + 1 {
			events = append(events, usage.Event{
				ID: fmt.Sprintf("e%d_%d", i, j), Source: "/test", Type: usage.TypeAPIRequest, Subject: s,
				Time: start.Add(time.Duration(j) * time.Second),
				Data: usage.Data{APIID: "api_1", Method: "GET", Path: "/a", Status: 200, Units: decimal.New(int64(j+1), 0)},
			})
		}
	}
	insertMeterEvents(t, conn, events)
	meters := []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits},
	}
	var windows []metering.MeterWindow
	for _, s := range subjects {
		got, err := metering.MeterTotals(ctx, conn, s, meters, start, start.Add(time.Hour))
		if err != nil {
			t.Fatalf("MeterTotals(%q): %v", s, err)
		}
		want := goMeterTotals(meters, events, s, start, start.Add(time.Hour), nil)
		for _, m := range meters {
			if !got[m.Slug].Equal(want[m.Slug]) || want[m.Slug].IsZero() {
				t.Errorf("MeterTotals(%q)[%s] = %s, want %s", s, m.Slug, got[m.Slug], want[m.Slug])
			}
		}
		windows = append(windows, metering.MeterWindow{Subject: s, Meters: meters, From: start, To: start.Add(time.Hour), Watermarks: map[int32]int64{0: 1}})
	}
	got, err := metering.MeterTotalsBatch(ctx, conn, windows)
	if err != nil {
		t.Fatalf("MeterTotalsBatch: %v", err)
	}
	for i, w := range windows {
		want := goMeterTotals(meters, events, w.Subject, w.From, w.To, w.Watermarks)
		for _, m := range meters {
			if !got[i][m.Slug].Equal(want[m.Slug]) {
				t.Errorf("MeterTotalsBatch, subject %q: %s = %s, want %s", w.Subject, m.Slug, got[i][m.Slug], want[m.Slug])
			}
		}
	}
}

// TestMeterTotalsSetBound: a unique_count meter is held at
// enforcement.MaxMeterSetMembers, as the processors' set in Redis is.
func TestMeterTotalsSetBound(t *testing.T) {
	conn, _, _ := testenv.ClickHouseDB(t)
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	events := make([]usage.Event, enforcement.MaxMeterSetMembers+5)
	for i := range events {
		events[i] = usage.Event{ID: fmt.Sprintf("e%d", i), Source: "/test", Type: usage.TypeAPIRequest, Subject: "sub_set",
			Time: start.Add(time.Minute), Data: usage.Data{APIID: "api_1", KeyID: fmt.Sprintf("k%d", i), Method: "GET", Path: "/", Status: 200}}
	}
	insertMeterEvents(t, conn, events)
	m := metering.Meter{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID}
	got, err := metering.MeterTotals(t.Context(), conn, "sub_set", []metering.Meter{m}, start, start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !got["keys"].Equal(decimal.NewFromInt(enforcement.MaxMeterSetMembers)) {
		t.Errorf("MeterTotals(keys) = %s; want %d", got["keys"], enforcement.MaxMeterSetMembers)
	}
}
