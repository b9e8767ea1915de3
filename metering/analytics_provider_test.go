package metering_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

// providerDataset: api_p's calls around two UTC days, one of api_q, and
// one call on each side of the window 2026-03-01 23:00 to 2026-03-03 02:00.
var providerDataset = []event{
	{"p0", "s1", "2026-03-01 22:59:59", "api_p", "k", "GET", "/a", "/a", 200, 1000, "7"}, // before the window
	{"p1", "s1", "2026-03-01 23:30:00", "api_p", "k", "GET", "/a", "/a", 200, 10, "1"},
	{"p2", "s1", "2026-03-02 00:10:00", "api_p", "k", "GET", "/a", "/a", 200, 20, "1"},
	{"p3", "s2", "2026-03-02 05:00:00", "api_p", "k", "GET", "/a", "/a", 500, 30, "0.5"},
	{"p4", "s2", "2026-03-02 23:59:59", "api_p", "k", "POST", "/b", "/b", 404, 40, "2"},
	{"p5", "s1", "2026-03-03 00:00:00", "api_p", "k", "POST", "/b", "/b", 201, 50, "1"},
	{"p6", "s3", "2026-03-03 01:30:00", "api_p", "k", "GET", "/a", "/a", 200, 60, "1"},
	{"p7", "s3", "2026-03-03 02:00:00", "api_p", "k", "GET", "/a", "/a", 200, 999, "9"}, // at the window's end
	{"q1", "s4", "2026-03-02 10:00:00", "api_q", "k", "GET", "/x", "/x", 200, 5, "3"},
}

func providerConn(t *testing.T) driver.Conn {
	t.Helper()
	conn := clickHouseUTC(t)
	// Stamped as the processors stamp rows: the roll-ups by API take rows
	// ingested after their migration.
	now := time.Now().UTC().Truncate(time.Second)
	var rows [][]any
	for i, e := range providerDataset {
		at := utc(t, e.at)
		rows = append(rows, []any{e.id, "/gateway", "veil.api.request", e.subject, at, e.api, e.key, e.method, e.route, e.path,
			e.status, e.latency, uint64(1), uint64(1), decimal.RequireFromString(e.units), now, int32(0), int64(i)})
	}
	insertEvents(t, conn, rows)
	return conn
}

// timing is ClickHouse's own quantilesTiming of the latencies of the
// given events over usage_events: what merging the roll-up's states must
// give.
func timing(t *testing.T, conn driver.Conn, ids ...string) metering.Latency {
	t.Helper()
	in := "'" + ids[0] + "'"
	for _, id := range ids[1:] {
		in += ", '" + id + "'"
	}
	var v []float64
	if err := conn.QueryRow(t.Context(), "SELECT arrayMap(x -> toFloat64(x), quantilesTiming(0.5, 0.9, 0.99)(latency_ms)) FROM usage_events WHERE id IN ("+in+")").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return metering.Latency{P50: v[0], P90: v[1], P99: v[2]}
}

func stats(calls, server, client uint64, units string, lat metering.Latency) metering.ProviderStats {
	return metering.ProviderStats{Calls: calls, ServerErrors: server, ClientErrors: client, Units: decimal.RequireFromString(units), Latency: lat}
}

func sameStats(t *testing.T, what string, got, want metering.ProviderStats) {
	t.Helper()
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6 }
	if got.Calls != want.Calls || got.ServerErrors != want.ServerErrors || got.ClientErrors != want.ClientErrors ||
		!got.Units.Equal(want.Units) || !near(got.Latency.P50, want.Latency.P50) || !near(got.Latency.P90, want.Latency.P90) ||
		!near(got.Latency.P99, want.Latency.P99) {
		t.Errorf("%s = %+v; want %+v", what, got, want)
	}
}

func TestProviderUsage(t *testing.T) {
	conn := providerConn(t)
	from, to := utc(t, "2026-03-01 23:00:00"), utc(t, "2026-03-03 02:00:00")
	q := metering.ProviderQuery{APIs: []string{"api_p"}, From: from, To: to, Top: 10}
	got, err := metering.ProviderUsage(t.Context(), conn, q)
	if err != nil {
		t.Fatal(err)
	}
	sameStats(t, "total", got.Total, stats(6, 1, 1, "6.5", timing(t, conn, "p1", "p2", "p3", "p4", "p5", "p6")))
	if got.UniqueConsumers != 3 {
		t.Errorf("unique consumers = %d; want 3", got.UniqueConsumers)
	}
	// UTC: the whole day 03-02 comes from the day roll-up, the hours
	// around it from the hour roll-up.
	wantDays := []struct {
		day string
		s   metering.ProviderStats
	}{
		{"2026-03-01", stats(1, 0, 0, "1", timing(t, conn, "p1"))},
		{"2026-03-02", stats(3, 1, 1, "3.5", timing(t, conn, "p2", "p3", "p4"))},
		{"2026-03-03", stats(2, 0, 0, "2", timing(t, conn, "p5", "p6"))},
	}
	if len(got.Days) != len(wantDays) {
		t.Fatalf("days = %+v; want %d", got.Days, len(wantDays))
	}
	for i, w := range wantDays {
		if got.Days[i].Day != w.day {
			t.Errorf("day %d = %s; want %s", i, got.Days[i].Day, w.day)
		}
		sameStats(t, w.day, got.Days[i].ProviderStats, w.s)
	}
	if len(got.Routes) != 2 || got.Routes[0].Method != "GET" || got.Routes[0].Route != "/a" || got.Routes[1].Route != "/b" {
		t.Fatalf("routes = %+v; want GET /a, POST /b", got.Routes)
	}
	sameStats(t, "GET /a", got.Routes[0].ProviderStats, stats(4, 1, 0, "3.5", timing(t, conn, "p1", "p2", "p3", "p6")))
	sameStats(t, "POST /b", got.Routes[1].ProviderStats, stats(2, 0, 1, "3", timing(t, conn, "p4", "p5")))
	wantConsumers := []metering.ProviderConsumer{
		{Subject: "s1", Calls: 3, Units: decimal.RequireFromString("3")},
		{Subject: "s2", Calls: 2, Units: decimal.RequireFromString("2.5")},
		{Subject: "s3", Calls: 1, Units: decimal.RequireFromString("1")},
	}
	if !slices.EqualFunc(got.Consumers, wantConsumers, func(a, b metering.ProviderConsumer) bool {
		return a.Subject == b.Subject && a.Calls == b.Calls && a.Units.Equal(b.Units)
	}) {
		t.Errorf("consumers = %+v; want %+v", got.Consumers, wantConsumers)
	}
	if got.APIs != nil {
		t.Errorf("APIs = %+v without ByAPI", got.APIs)
	}
}

// TestProviderUsageZone: days cut at New York's midnight (UTC-5 then),
// from the hour roll-up.
func TestProviderUsageZone(t *testing.T) {
	conn := providerConn(t)
	q := metering.ProviderQuery{APIs: []string{"api_p"}, From: utc(t, "2026-03-01 23:00:00"), To: utc(t, "2026-03-03 02:00:00"),
		Zone: "America/New_York", Top: 10, ByAPI: true}
	got, err := metering.ProviderUsage(t.Context(), conn, q)
	if err != nil {
		t.Fatal(err)
	}
	// The total, routes and APIs are read apart from the days (cut at
	// UTC midnights): the same calls.
	sameStats(t, "total", got.Total, stats(6, 1, 1, "6.5", timing(t, conn, "p1", "p2", "p3", "p4", "p5", "p6")))
	if len(got.APIs) != 1 || got.APIs[0].APIID != "api_p" || got.APIs[0].UniqueConsumers != 3 {
		t.Errorf("APIs = %+v; want api_p with 3 consumers", got.APIs)
	} else {
		sameStats(t, "api_p", got.APIs[0].ProviderStats, got.Total)
	}
	if len(got.Routes) != 2 || got.Routes[0].Calls != 4 || got.Routes[1].Calls != 2 {
		t.Errorf("routes = %+v; want GET /a 4, POST /b 2", got.Routes)
	}
	var days []string
	for _, d := range got.Days {
		days = append(days, fmt.Sprintf("%s %d %s", d.Day, d.Calls, d.Units))
	}
	want := []string{"2026-03-01 2 2", "2026-03-02 4 4.5"}
	if !slices.Equal(days, want) {
		t.Errorf("days = %q; want %q", days, want)
	}
}

// TestProviderUsageByAPIAndTop: several APIs each with their unique
// consumers; Top cuts routes and consumers to the busiest.
func TestProviderUsageByAPIAndTop(t *testing.T) {
	conn := providerConn(t)
	q := metering.ProviderQuery{APIs: []string{"api_p", "api_q"}, From: utc(t, "2026-03-01 23:00:00"), To: utc(t, "2026-03-03 02:00:00"),
		Top: 1, ByAPI: true}
	got, err := metering.ProviderUsage(t.Context(), conn, q)
	if err != nil {
		t.Fatal(err)
	}
	if got.Total.Calls != 7 || got.UniqueConsumers != 4 {
		t.Errorf("total calls %d, unique %d; want 7, 4", got.Total.Calls, got.UniqueConsumers)
	}
	var apis []string
	for _, a := range got.APIs {
		apis = append(apis, fmt.Sprintf("%s %d %d %s", a.APIID, a.Calls, a.UniqueConsumers, a.Units))
	}
	if want := []string{"api_p 6 3 6.5", "api_q 1 1 3"}; !slices.Equal(apis, want) {
		t.Errorf("APIs = %q; want %q", apis, want)
	}
	if len(got.Routes) != 1 || got.Routes[0].Route != "/a" || len(got.Consumers) != 1 || got.Consumers[0].Subject != "s1" {
		t.Errorf("top 1: routes %+v, consumers %+v; want GET /a and s1", got.Routes, got.Consumers)
	}
}

func TestProviderUsageRefusesBadQueries(t *testing.T) {
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for name, q := range map[string]metering.ProviderQuery{
		"no API":        {From: from, To: from.Add(time.Hour)},
		"quoted API id": {APIs: []string{"a' OR 1"}, From: from, To: from.Add(time.Hour)},
		"empty window":  {APIs: []string{"a"}, From: from, To: from},
		"part second":   {APIs: []string{"a"}, From: from, To: from.Add(time.Millisecond)},
		"part minute":   {APIs: []string{"a"}, From: from.Add(30 * time.Second), To: from.Add(time.Hour)},
		"unknown zone":  {APIs: []string{"a"}, From: from, To: from.Add(time.Hour), Zone: "Mars/Olympus"},
		"too long":      {APIs: []string{"a"}, From: from, To: from.Add(402 * 24 * time.Hour)},
		"quoted zone":   {APIs: []string{"a"}, From: from, To: from.Add(time.Hour), Zone: "UTC'"},
		"top":           {APIs: []string{"a"}, From: from, To: from.Add(time.Hour), Top: 101},
	} {
		// A nil connection: a bad query must fail before it reads.
		if _, err := metering.ProviderUsage(t.Context(), nil, q); !errors.Is(err, metering.ErrBadQuery) {
			t.Errorf("%s: err = %v; want ErrBadQuery", name, err)
		}
	}
}

func TestProviderWindow(t *testing.T) {
	from, to := metering.ProviderWindow(time.Date(2026, 3, 1, 10, 15, 30, 0, time.UTC), time.Date(2026, 3, 1, 12, 0, 0, 1, time.UTC))
	if !from.Equal(time.Date(2026, 3, 1, 10, 15, 0, 0, time.UTC)) || !to.Equal(time.Date(2026, 3, 1, 12, 1, 0, 0, time.UTC)) {
		t.Errorf("window = %s, %s; want 10:15 to 12:01", from, to)
	}
	from, to = metering.ProviderWindow(time.Date(2026, 3, 1, 10, 7, 0, 0, time.UTC), time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	if !from.Equal(time.Date(2026, 3, 1, 10, 7, 0, 0, time.UTC)) || !to.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("whole minutes moved: %s, %s", from, to)
	}
}

// TestProviderUsageRaggedMinutes: a window that starts and ends inside UTC
// hours reads its ends in quarter hours and minutes, to the minute: the
// calls in the minute before it and in its last minute's successor are
// left out.
func TestProviderUsageRaggedMinutes(t *testing.T) {
	conn := clickHouseUTC(t)
	now := time.Now().UTC().Truncate(time.Second)
	events := []struct{ id, at, units string }{
		{"m0", "2026-03-01 22:06:59", "100"}, // before the window
		{"m1", "2026-03-01 22:07:00", "1"},   // its first second
		{"m2", "2026-03-01 23:59:59", "2"},
		{"m3", "2026-03-02 00:00:00", "4"},
		{"m4", "2026-03-02 12:00:00", "8"},
		{"m5", "2026-03-03 00:30:00", "16"},
		{"m6", "2026-03-03 02:52:59", "32"},  // its last second
		{"m7", "2026-03-03 02:53:00", "200"}, // after it
	}
	var rows [][]any
	for i, e := range events {
		rows = append(rows, []any{e.id, "/gateway", "veil.api.request", "s1", utc(t, e.at), "api_m", "k", "GET", "/a", "/a",
			uint16(200), uint32(10 + i), uint64(1), uint64(1), decimal.RequireFromString(e.units), now, int32(0), int64(i)})
	}
	insertEvents(t, conn, rows)
	from, to := utc(t, "2026-03-01 22:07:00"), utc(t, "2026-03-03 02:53:00")
	want := []string{"minute", "quarter", "hour", "day", "hour", "quarter", "minute"}
	if got := metering.ProviderPieces(from, to, time.UTC); !slices.Equal(got, want) {
		t.Errorf("pieces = %v; want %v", got, want)
	}
	got, err := metering.ProviderUsage(t.Context(), conn, metering.ProviderQuery{APIs: []string{"api_m"}, From: from, To: to, Top: 10})
	if err != nil {
		t.Fatal(err)
	}
	var days []string
	for _, d := range got.Days {
		days = append(days, fmt.Sprintf("%s %d %s", d.Day, d.Calls, d.Units))
	}
	if want := []string{"2026-03-01 2 3", "2026-03-02 2 12", "2026-03-03 2 48"}; !slices.Equal(days, want) {
		t.Errorf("days = %q; want %q", days, want)
	}
	sameStats(t, "total", got.Total, stats(6, 0, 0, "63", timing(t, conn, "m1", "m2", "m3", "m4", "m5", "m6")))
	if len(got.Consumers) != 1 || got.Consumers[0].Calls != 6 || !got.Consumers[0].Units.Equal(decimal.RequireFromString("63")) {
		t.Errorf("consumers = %+v; want s1 with 6 calls, 63 units", got.Consumers)
	}
}

// TestProviderUsageRefusesSecondsOffsets: a day that starts off a whole
// minute (Monrovia kept UTC-0:44:30 until 1972) cannot be cut from the
// minute roll-up; the query is refused before it reads.
func TestProviderUsageRefusesSecondsOffsets(t *testing.T) {
	q := metering.ProviderQuery{APIs: []string{"a"}, From: utc(t, "1971-03-01 00:00:00"), To: utc(t, "1971-03-03 00:00:00"), Zone: "Africa/Monrovia"}
	if _, err := metering.ProviderUsage(t.Context(), nil, q); !errors.Is(err, metering.ErrBadQuery) {
		t.Errorf("err = %v; want ErrBadQuery", err)
	}
}

// TestProviderUsageHalfHourZone: in Asia/Kolkata (UTC+5:30) midnight is
// at half past a UTC hour; calls a second either side of the window's
// ends and of the midnight inside it count on their own day, and nothing
// before the window shows.
func TestProviderUsageHalfHourZone(t *testing.T) {
	conn := clickHouseUTC(t)
	now := time.Now().UTC().Truncate(time.Second)
	// Local midnights: 2026-03-02 00:00 IST = 03-01 18:30 UTC, 03-03 =
	// 03-02 18:30, 03-04 = 03-03 18:30.
	events := []struct{ id, at, units string }{
		{"k0", "2026-03-01 18:29:59", "100"}, // 03-01 IST, before the window
		{"k1", "2026-03-01 18:30:00", "1"},   // 03-02 IST, the window's first second
		{"k2", "2026-03-01 18:59:59", "2"},
		{"k3", "2026-03-02 10:00:00", "4"},
		{"k4", "2026-03-02 18:29:59", "8"},   // last second of 03-02 IST
		{"k5", "2026-03-02 18:30:00", "16"},  // 03-03 IST
		{"k6", "2026-03-03 18:29:59", "32"},  // last second of the window
		{"k7", "2026-03-03 18:30:00", "200"}, // 03-04 IST, after the window
	}
	var rows [][]any
	for i, e := range events {
		rows = append(rows, []any{e.id, "/gateway", "veil.api.request", "s1", utc(t, e.at), "api_k", "k", "GET", "/a", "/a",
			uint16(200), uint32(10 + i), uint64(1), uint64(1), decimal.RequireFromString(e.units), now, int32(0), int64(i)})
	}
	insertEvents(t, conn, rows)
	q := metering.ProviderQuery{APIs: []string{"api_k"}, From: utc(t, "2026-03-01 18:30:00"), To: utc(t, "2026-03-03 18:30:00"),
		Zone: "Asia/Kolkata", Top: 10}
	got, err := metering.ProviderUsage(t.Context(), conn, q)
	if err != nil {
		t.Fatal(err)
	}
	var days []string
	for _, d := range got.Days {
		days = append(days, fmt.Sprintf("%s %d %s", d.Day, d.Calls, d.Units))
	}
	want := []string{"2026-03-02 4 15", "2026-03-03 2 48"}
	if !slices.Equal(days, want) {
		t.Errorf("days = %q; want %q", days, want)
	}
	sameStats(t, "total", got.Total, stats(6, 0, 0, "63", timing(t, conn, "k1", "k2", "k3", "k4", "k5", "k6")))
	if len(got.Consumers) != 1 || got.Consumers[0].Calls != 6 || !got.Consumers[0].Units.Equal(decimal.RequireFromString("63")) {
		t.Errorf("consumers = %+v; want s1 with 6 calls, 63 units", got.Consumers)
	}
}

// TestProviderPiecesZeroOffsetZone: a zone at UTC+0 reads whole days from
// the day roll-up as UTC does; Kolkata never can.
func TestProviderPiecesZeroOffsetZone(t *testing.T) {
	from, to := utc(t, "2026-01-05 00:00:00"), utc(t, "2026-02-04 00:00:00")
	for zone, wantDay := range map[string]bool{"UTC": true, "Europe/London": true, "Africa/Abidjan": true, "Asia/Kolkata": false, "America/New_York": false} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		pieces := metering.ProviderPieces(from, to, loc)
		if day := len(pieces) == 1 && pieces[0] == "day"; day != wantDay {
			t.Errorf("%s: pieces = %v; want one day piece %v", zone, pieces, wantDay)
		}
	}
}

// TestProviderUsageZoneUnknownToClickHouse: a zone Go loads and ClickHouse
// cannot (right/… are leap-second zones ClickHouse refuses) is the
// caller's error, not the store's.
func TestProviderUsageZoneUnknownToClickHouse(t *testing.T) {
	conn := providerConn(t)
	q := metering.ProviderQuery{APIs: []string{"api_p"}, From: utc(t, "2026-03-01 23:00:00"), To: utc(t, "2026-03-03 02:00:00"),
		Zone: "right/America/New_York", Top: 10}
	if _, err := time.LoadLocation(q.Zone); err != nil {
		t.Fatalf("this host has no %s: %v", q.Zone, err)
	}
	if _, err := metering.ProviderUsage(t.Context(), conn, q); !errors.Is(err, metering.ErrBadQuery) {
		t.Errorf("err = %v; want ErrBadQuery", err)
	}
}
