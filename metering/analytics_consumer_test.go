package metering_test

import (
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

// analyticsEvent is one row of analyticsDataset.
type analyticsEvent struct {
	subject, at, key, method, route string
	status                          uint16
	latency                         uint32
	units                           string
}

// analyticsDataset: sub_a's calls on either side of Asia/Kolkata's
// midnights (18:30 UTC) and of the window's ragged ends, and sub_b's at
// the same instants, which sub_a's answers must never show. Latencies are
// chosen so that every quantile below is one of the values (no
// interpolation): each day's calls share one latency.
var analyticsDataset = []analyticsEvent{
	{"sub_a", "2026-03-01 10:15:29", "key_1", "GET", "/v1/items/{id}", 200, 999, "100"}, // before from
	{"sub_a", "2026-03-01 10:15:30", "key_1", "GET", "/v1/items/{id}", 200, 10, "1.5"},
	{"sub_a", "2026-03-01 18:29:59", "key_2", "GET", "/v1/items/{id}", 500, 10, "0"},
	{"sub_a", "2026-03-01 18:30:00", "key_1", "GET", "/v1/items/{id}", 404, 20, "0"},
	{"sub_a", "2026-03-02 12:00:00", "key_1", "POST", "/v1/items", 201, 20, "2.25"},
	{"sub_a", "2026-03-02 18:29:59", "key_2", "GET", "/v1/items/{id}", 200, 20, "1"},
	{"sub_a", "2026-03-02 18:30:00", "key_1", "GET", "/v1/items/{id}", 503, 40, "0.000001"},
	{"sub_a", "2026-03-03 19:00:09", "key_1", "GET", "/v1/items/{id}", 429, 40, "0"},
	{"sub_a", "2026-03-03 19:00:10", "key_1", "GET", "/v1/items/{id}", 200, 999, "100"}, // at to
	{"sub_b", "2026-03-01 18:29:59", "key_b", "GET", "/v1/items/{id}", 500, 999, "100"},
	{"sub_b", "2026-03-02 12:00:00", "key_b", "GET", "/v1/other", 200, 999, "100"},
}

// analyticsWindow is the window the tests ask for: ragged ends (seconds
// past a minute), three Kolkata midnights inside.
func analyticsWindow(t *testing.T) (from, to time.Time, cuts []time.Time) {
	t.Helper()
	loc, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	from, to = utc(t, "2026-03-01 10:15:30"), utc(t, "2026-03-03 19:00:10")
	for d := time.Date(2026, 3, 2, 0, 0, 0, 0, loc); d.Before(to); d = d.AddDate(0, 0, 1) {
		cuts = append(cuts, d)
	}
	return from, to, cuts
}

func setupAnalytics(t *testing.T) *metering.Reader {
	t.Helper()
	conn := clickHouseUTC(t)
	var rows [][]any
	for i, e := range analyticsDataset {
		ts := utc(t, e.at)
		rows = append(rows, []any{fmt.Sprintf("a%02d", i), "/gateway", "veil.api.request", e.subject, ts, "api_x", e.key,
			e.method, e.route, "/v1/items/1", e.status, e.latency, uint64(1), uint64(1),
			decimal.RequireFromString(e.units), ts.Add(time.Second), int32(0), int64(i)})
	}
	insertEvents(t, conn, rows)
	return metering.NewReader(conn)
}

// oracle counts sub_a's events of the window (and key, if any) in Go:
// what the answer's counters must be, independently of the SQL.
func oracle(t *testing.T, key string) (total metering.Stats, days []metering.Stats, routes map[string]metering.Stats, classes map[uint8]uint64) {
	from, to, cuts := analyticsWindow(t)
	days = make([]metering.Stats, len(cuts)+1)
	routes, classes = map[string]metering.Stats{}, map[uint8]uint64{}
	add := func(s *metering.Stats, e analyticsEvent) {
		s.Calls++
		s.Units = s.Units.Add(decimal.RequireFromString(e.units))
		switch e.status / 100 {
		case 5:
			s.ServerErrors++
		case 4:
			s.ClientErrors++
		}
	}
	for _, e := range analyticsDataset {
		at := utc(t, e.at)
		if e.subject != "sub_a" || at.Before(from) || !at.Before(to) || (key != "" && e.key != key) {
			continue
		}
		day := sort.Search(len(cuts), func(i int) bool { return cuts[i].After(at) })
		add(&total, e)
		add(&days[day], e)
		r := routes[e.method+" "+e.route]
		add(&r, e)
		routes[e.method+" "+e.route] = r
		classes[uint8(e.status/100)]++
	}
	return total, days, routes, classes
}

func sameCounts(t *testing.T, what string, got, want metering.Stats) {
	t.Helper()
	if got.Calls != want.Calls || got.ServerErrors != want.ServerErrors || got.ClientErrors != want.ClientErrors || !got.Units.Equal(want.Units) {
		t.Errorf("%s: calls %d, 5xx %d, 4xx %d, units %s; want %d, %d, %d, %s", what, got.Calls, got.ServerErrors, got.ClientErrors, got.Units,
			want.Calls, want.ServerErrors, want.ClientErrors, want.Units)
	}
}

func sameLatency(t *testing.T, what string, got metering.Stats, p50, p90, p99 float64) {
	t.Helper()
	if got.P50 != p50 || got.P90 != p90 || got.P99 != p99 {
		t.Errorf("%s: latency %v/%v/%v; want %v/%v/%v", what, got.P50, got.P90, got.P99, p50, p90, p99)
	}
}

// TestAnalyticsKolkataDays reads the same window both ways: from
// usage_events alone (a window up to a month) and from the roll-ups'
// pieces (a longer one: here the limit is moved to read it so).
func TestAnalyticsKolkataDays(t *testing.T) {
	r := setupAnalytics(t)
	from, to, cuts := analyticsWindow(t)
	for _, tc := range []struct {
		key     string
		rollups bool
		// latency per day, of the total and of GET /v1/items/{id}
		days         []float64
		total, items [3]float64
	}{
		// Total: 10 10 20 20 20 40 40. Items: 10 10 20 20 40 40.
		{key: "", days: []float64{10, 20, 40, 40}, total: [3]float64{20, 40, 40}, items: [3]float64{20, 40, 40}},
		{key: "", rollups: true, days: []float64{10, 20, 40, 40}, total: [3]float64{20, 40, 40}, items: [3]float64{20, 40, 40}},
		// key_1: 10 20 20 40 40; items: 10 20 40 40, whose median
		// quantileTiming takes at rank n/2 (40) and the roll-ups'
		// reservoir interpolates halfway between 20 and 40.
		{key: "key_1", days: []float64{10, 20, 40, 40}, total: [3]float64{20, 40, 40}, items: [3]float64{40, 40, 40}},
		{key: "key_1", rollups: true, days: []float64{10, 20, 40, 40}, total: [3]float64{20, 40, 40}, items: [3]float64{30, 40, 40}},
	} {
		t.Run(fmt.Sprintf("key=%s/rollups=%t", tc.key, tc.rollups), func(t *testing.T) {
			if tc.rollups {
				defer metering.SetRawAnalyticsWindow(time.Hour)()
			}
			got, err := r.Analytics(t.Context(), metering.AnalyticsQuery{Subject: "sub_a", KeyID: tc.key, From: from, To: to, DayStarts: cuts})
			if err != nil {
				t.Fatal(err)
			}
			total, days, routes, classes := oracle(t, tc.key)
			sameCounts(t, "total", got.Total, total)
			sameLatency(t, "total", got.Total, tc.total[0], tc.total[1], tc.total[2])
			if len(got.Days) != 4 {
				t.Fatalf("%d days; want 4", len(got.Days))
			}
			for i := range days {
				sameCounts(t, fmt.Sprintf("day %d", i), got.Days[i], days[i])
				sameLatency(t, fmt.Sprintf("day %d", i), got.Days[i], tc.days[i], tc.days[i], tc.days[i])
			}
			if len(got.Routes) != len(routes) || got.RoutesTruncated {
				t.Fatalf("routes %+v; want %d", got.Routes, len(routes))
			}
			for i, rt := range got.Routes {
				sameCounts(t, rt.Method+" "+rt.Route, rt.Stats, routes[rt.Method+" "+rt.Route])
				if i > 0 && rt.Calls > got.Routes[i-1].Calls {
					t.Errorf("routes not busiest first: %+v", got.Routes)
				}
			}
			sameLatency(t, "GET items", got.Routes[0].Stats, tc.items[0], tc.items[1], tc.items[2])
			sameLatency(t, "POST items", got.Routes[1].Stats, 20, 20, 20)
			if len(got.StatusClasses) != len(classes) {
				t.Fatalf("status classes %+v; want %v", got.StatusClasses, classes)
			}
			for i, c := range got.StatusClasses {
				if c.Calls != classes[c.Class] || (i > 0 && c.Class <= got.StatusClasses[i-1].Class) {
					t.Errorf("status classes %+v; want %v, ascending", got.StatusClasses, classes)
				}
			}
		})
	}
}

// TestAnalyticsUTCDays reads whole UTC days from the day roll-up: the
// same events, other cuts.
func TestAnalyticsUTCDays(t *testing.T) {
	r := setupAnalytics(t)
	defer metering.SetRawAnalyticsWindow(time.Hour)()
	from, to := utc(t, "2026-02-28 00:00:00"), utc(t, "2026-03-05 00:00:00")
	var cuts []time.Time
	for d := from.AddDate(0, 0, 1); d.Before(to); d = d.AddDate(0, 0, 1) {
		cuts = append(cuts, d)
	}
	got, err := r.Analytics(t.Context(), metering.AnalyticsQuery{Subject: "sub_a", From: from, To: to, DayStarts: cuts})
	if err != nil {
		t.Fatal(err)
	}
	// By UTC day: 02-28 none; 03-01 four (both edge events of the other
	// test's window and the one before it); 03-02 three; 03-03 two.
	for i, want := range []uint64{0, 4, 3, 2, 0} {
		if got.Days[i].Calls != want {
			t.Errorf("day %d: %d calls; want %d", i, got.Days[i].Calls, want)
		}
	}
	if got.Total.Calls != 9 || !got.Total.Units.Equal(decimal.RequireFromString("204.750001")) {
		t.Errorf("total %+v; want 9 calls, 204.750001 units", got.Total)
	}
}

func TestAnalyticsRefusesBadQueries(t *testing.T) {
	r := setupAnalytics(t)
	from, to, cuts := analyticsWindow(t)
	for name, q := range map[string]metering.AnalyticsQuery{
		"no subject":      {From: from, To: to},
		"empty window":    {Subject: "sub_a", From: to, To: to},
		"cut outside":     {Subject: "sub_a", From: from, To: to, DayStarts: []time.Time{to}},
		"cuts descending": {Subject: "sub_a", From: from, To: to, DayStarts: []time.Time{cuts[1], cuts[0]}},
	} {
		if _, err := r.Analytics(t.Context(), q); !errors.Is(err, metering.ErrBadQuery) {
			t.Errorf("%s: %v; want ErrBadQuery", name, err)
		}
	}
}

// TestAnalyticsLongWindowExact: 400 days in zones whose midnight is not a
// whole UTC hour read the roll-ups through one range and a set of hours
// per table; every event of sub_a still lands in its own local day, once.
func TestAnalyticsLongWindowExact(t *testing.T) {
	r := setupAnalytics(t)
	for _, zone := range []string{"Asia/Kolkata", "America/St_Johns"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		from := utc(t, "2025-11-20 10:15:30")
		to := from.Add(400 * 24 * time.Hour)
		cuts := metering.DayStarts(from, to, loc)
		got, err := r.Analytics(t.Context(), metering.AnalyticsQuery{Subject: "sub_a", From: from, To: to, DayStarts: cuts})
		if err != nil {
			t.Fatalf("%s: %v", zone, err)
		}
		want := make([]uint64, len(cuts)+1)
		var total uint64
		for _, e := range analyticsDataset {
			if at := utc(t, e.at); e.subject == "sub_a" {
				want[sort.Search(len(cuts), func(i int) bool { return cuts[i].After(at) })]++
				total++
			}
		}
		if got.Total.Calls != total {
			t.Errorf("%s: %d calls; want %d", zone, got.Total.Calls, total)
		}
		for i := range want {
			if got.Days[i].Calls != want[i] {
				t.Errorf("%s: day %d (from %v): %d calls; want %d", zone, i, cuts[max(i-1, 0)], got.Days[i].Calls, want[i])
			}
		}
	}
}
