package metering_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/migrate"
	"github.com/veil-platform/veil/schemas/usage"
)

// setRollupBegan records that the roll-up's view began at t: the earliest
// row of usage_billing_since is when it began.
func setRollupBegan(t testing.TB, conn driver.Conn, began time.Time) {
	t.Helper()
	if err := conn.Exec(t.Context(), "INSERT INTO usage_billing_since SELECT toDateTime(@b)", clickhouse.Named("b", began.Unix())); err != nil {
		t.Fatalf("record roll-up start: %v", err)
	}
}

// rollupViewSQL is the statement of migration 0004 that creates the
// roll-up's view, to create it again after rows it missed.
func rollupViewSQL(t testing.TB) string {
	t.Helper()
	ms, err := migrate.ClickHouseMigrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for _, s := range m.Statements {
			if strings.Contains(s, "MATERIALIZED VIEW IF NOT EXISTS usage_billing_hour_mv") {
				return s
			}
		}
	}
	t.Fatal("no migration creates usage_billing_hour_mv")
	return ""
}

// edgeTime is a random second of [start, start+hours h), most often one
// at or next to an hour's start.
func edgeTime(r *rand.Rand, start time.Time, hours int) time.Time {
	h := start.Add(time.Duration(r.IntN(hours)) * time.Hour)
	switch r.IntN(4) {
	case 0:
		return h
	case 1:
		return h.Add(time.Second)
	case 2:
		return h.Add(time.Hour - time.Second)
	}
	return h.Add(time.Duration(r.IntN(3600)) * time.Second)
}

// TestRollupTotalsEqualBaseTable is the comparison the roll-up must pass:
// random events of several subscriptions (every method, status class and
// 5xx, refusals, keys and none, units, bytes and latencies, seconds at and
// around hour edges) over 48 hours, of which the first were written before
// the roll-up's view existed; for hundreds of random windows and meters
// of every aggregation, with and without filters, MeterTotalsRollupMany
// equals MeterTotalsMany on the base table exactly.
func TestRollupTotalsEqualBaseTable(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 16))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const hours = 48
	// The view begins 10h20m in, so it serves from 12:00 on; the rows
	// it missed are those received before it: events up to 5 minutes
	// ahead of that, and most of the earlier ones (the rest arrive late).
	began := start.Add(10*time.Hour + 20*time.Minute)
	subjects := []string{"sub_a", "sub_b", "sub_c", "sub_d", "sub'e"}
	var before, after []usage.Event
	for i := range 6000 {
		e := randomEvent(r, i, subjects[r.IntN(len(subjects))], start, time.Hour)
		e.Time = edgeTime(r, start, hours)
		if r.IntN(8) == 0 {
			e.Data.Refusal = "quota_exhausted"
		}
		if !e.Time.After(began.Add(usage.DefaultMaxFuture)) && r.IntN(5) > 0 {
			before = append(before, e)
		} else {
			after = append(after, e)
		}
	}
	if err := conn.Exec(ctx, "DROP TABLE usage_billing_hour_mv"); err != nil {
		t.Fatal(err)
	}
	insertMeterEvents(t, conn, before)
	if err := conn.Exec(ctx, rollupViewSQL(t)); err != nil {
		t.Fatal(err)
	}
	setRollupBegan(t, conn, began)
	// Several inserts leave several parts, so the roll-up holds more than
	// one row per hour and group until it merges.
	for len(after) > 0 {
		n := min(len(after), 700)
		insertMeterEvents(t, conn, after[:n])
		after = after[n:]
	}
	since, ok, err := metering.BillingRollupFrom(ctx, conn)
	if err != nil || !ok || !since.Equal(start.Add(12*time.Hour)) {
		t.Fatalf("BillingRollupFrom = %s, %v, %v; want %s", since, ok, err, start.Add(12*time.Hour))
	}
	var served, nonzero int
	for range 60 {
		windows := randomRollupWindows(r, subjects, start, hours)
		for _, w := range windows {
			if _, _, ok := metering.RollupSpan(w, since); ok {
				served++
			}
		}
		want, err := metering.MeterTotalsMany(ctx, conn, windows)
		if err != nil {
			t.Fatal(err)
		}
		got, err := metering.MeterTotalsRollupMany(ctx, conn, windows)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range windows {
			if len(got[i]) != len(w.Meters) {
				t.Fatalf("window %d: %d figures for %d meters", i, len(got[i]), len(w.Meters))
			}
			for _, m := range w.Meters {
				if !got[i][m.Slug].Equal(want[i][m.Slug]) {
					t.Fatalf("window %d (%s, %s to %s), meter %+v: roll-up %s, base table %s", i, w.Subject, w.From, w.To, m, got[i][m.Slug], want[i][m.Slug])
				}
				if !want[i][m.Slug].IsZero() {
					nonzero++
				}
			}
		}
	}
	// A generator whose windows the roll-up never serves, or that count
	// nothing, would prove nothing.
	if served < 300 || nonzero < 1000 {
		t.Fatalf("only %d windows served by the roll-up, %d non-zero figures", served, nonzero)
	}
}

// randomRollupWindows is a batch of windows of the subjects, one now and
// then twice (two segments): bounds at any second (some with a fraction),
// on an hour, before and across the roll-up's start, now and then empty or
// with watermarks; meters of every aggregation, most without a route.
func randomRollupWindows(r *rand.Rand, subjects []string, start time.Time, hours int) []metering.MeterWindow {
	var out []metering.MeterWindow
	for _, s := range subjects {
		for range 1 + r.IntN(2) {
			from, to := edgeTime(r, start, hours), edgeTime(r, start, hours)
			if to.Before(from) {
				from, to = to, from
			}
			if r.IntN(4) == 0 {
				from = from.Add(time.Duration(r.IntN(1e9)))
			}
			w := metering.MeterWindow{Subject: s, From: from, To: to}
			for j := range 1 + r.IntN(6) {
				m := randomMeter(r, fmt.Sprintf("m%d", j), []string{"/a", "/users/42", "/a/b"})
				if r.IntN(4) > 0 {
					m.Filter.Routes = nil
				}
				w.Meters = append(w.Meters, m)
			}
			if r.IntN(15) == 0 {
				w.Watermarks = map[int32]int64{0: int64(r.IntN(2000))}
			}
			out = append(out, w)
		}
	}
	return out
}

// TestRollupIsRead: a window of whole hours reads the roll-up, not the
// base table: with a roll-up row the base table lacks (written straight
// into usage_billing_hour), the roll-up-backed figures show it, the base
// table's do not, and a window one second short of the hour, which the
// roll-up does not serve, does not either.
func TestRollupIsRead(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	setRollupBegan(t, conn, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	err := conn.Exec(ctx, `INSERT INTO usage_billing_hour
SELECT toDateTime('2026-03-01 05:00:00'), 'ghost', 'api_1', 'GET', toUInt8(2),
    countState(), sumState(toDecimal64(1.5, 6)), sumState(toDecimal128(10, 0)), sumState(toDecimal128(20, 0)),
    sumState(toDecimal128(30, 0)), maxState(toDecimal64(1.5, 6)), maxState(toUInt64(10)), maxState(toUInt64(20)),
    maxState(toUInt32(30)), uniqExactState('key_1'), maxState(toUInt8(0))
FROM system.one`)
	if err != nil {
		t.Fatal(err)
	}
	meters := []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits},
		{Slug: "slowest", Aggregation: metering.AggMax, Field: metering.FieldLatencyMS},
		{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID},
	}
	hour := time.Date(2026, 3, 1, 5, 0, 0, 0, time.UTC)
	windows := []metering.MeterWindow{
		{Subject: "ghost", Meters: meters, From: hour, To: hour.Add(time.Hour)},
	}
	got, err := metering.MeterTotalsRollupMany(ctx, conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	for slug, v := range map[string]string{"calls": "1", "units": "1.5", "slowest": "30", "keys": "1"} {
		if !got[0][slug].Equal(decimal.RequireFromString(v)) {
			t.Errorf("roll-up-backed %s = %s, want %s from the roll-up row", slug, got[0][slug], v)
		}
	}
	base, err := metering.MeterTotalsMany(ctx, conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	if !base[0]["calls"].IsZero() {
		t.Errorf("base table calls = %s, want 0", base[0]["calls"])
	}
	windows[0].To = windows[0].To.Add(-time.Second)
	short, err := metering.MeterTotalsRollupMany(ctx, conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	if !short[0]["calls"].IsZero() {
		t.Errorf("a window short of the hour counted %s calls: it read the roll-up", short[0]["calls"])
	}
}

// TestRollupNotBegun: a roll-up whose view began after the window serves
// none of it, even when it holds rows of those hours.
func TestRollupNotBegun(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	// The migration recorded now as the start: the day before is not
	// served.
	hour := time.Now().UTC().Truncate(time.Hour).Add(-24 * time.Hour)
	if err := conn.Exec(ctx, "INSERT INTO usage_billing_hour (bucket, subject, requests) SELECT toDateTime(@h), 'ghost', countState() FROM system.one", clickhouse.Named("h", hour.Unix())); err != nil {
		t.Fatal(err)
	}
	got, err := metering.MeterTotalsRollupMany(ctx, conn, []metering.MeterWindow{
		{Subject: "ghost", Meters: []metering.Meter{{Slug: "calls", Aggregation: metering.AggCount}}, From: hour, To: hour.Add(time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !got[0]["calls"].IsZero() {
		t.Errorf("calls = %s before the roll-up began, want 0 (the base table)", got[0]["calls"])
	}
}

// BenchmarkSnapshotRollup: what a close of 100 monthly periods counts,
// 30,000 events each (3,000,000 in a month, about 40 an hour per
// subscription, mostly GET and 2xx), five meters without a route filter
// (and the four without the unique_count), each period starting and
// ending at its own second: MeterTotalsMany on usage_events against
// MeterTotalsRollupMany. Both tables are merged first, as a month-old
// partition is.
func BenchmarkSnapshotRollup(b *testing.B) {
	conn, _, _ := testenv.ClickHouseDB(b)
	ctx := b.Context()
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	setRollupBegan(b, conn, start.AddDate(0, -1, 0))
	const events, subjects = 3_000_000, 100
	err := conn.Exec(ctx, `INSERT INTO usage_events
		(id, source, type, subject, time, api_id, key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, refusal)
		SELECT toString(number), '/bench', 'veil.api.request', concat('sub_', toString(number % @subjects)),
			toDateTime(@start) + intDiv(number * 2678400, @events), 'api_1',
			concat('key_', toString(number % 37)),
			['GET', 'GET', 'GET', 'GET', 'POST'][number % 9 % 5 + 1],
			'/users/{id}', concat('/users/', toString(number % 1000)),
			toUInt16([200, 200, 200, 201, 404, 200, 500][number % 11 % 7 + 1]),
			toUInt32(number % 997), number % 4096, number % 65536,
			toDecimal64(number % 1000, 6) / 1000,
			if(number % 53 = 0, 'rate_limited', '')
		FROM numbers(@events)`,
		clickhouse.Named("subjects", subjects), clickhouse.Named("start", start.Unix()), clickhouse.Named("events", events))
	if err != nil {
		b.Fatal(err)
	}
	for _, table := range []string{"usage_events", "usage_billing_hour"} {
		if err := conn.Exec(ctx, "OPTIMIZE TABLE "+table+" FINAL"); err != nil {
			b.Fatal(err)
		}
	}
	meters := []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits, Filter: metering.Filter{Methods: []string{"GET"}}},
		{Slug: "slowest", Aggregation: metering.AggMax, Field: metering.FieldLatencyMS, Filter: metering.Filter{StatusClasses: []string{"2xx"}}},
		{Slug: "egress", Aggregation: metering.AggSum, Field: metering.FieldResponseBytes},
		{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID},
	}
	// A unique_count merges hourly key sets, most of the roll-up's cost:
	// the meters are measured with it and without. yearly is five with one
	// period of a year that began eleven months before the roll-up: its
	// edge before the roll-up is thousands of hours of usage_events.
	for _, set := range []struct {
		name   string
		meters []metering.Meter
		yearly bool
	}{{"five", meters, false}, {"nokeys", meters[:4], false}, {"yearly", meters, true}} {
		windows := benchWindows(set.meters, start, subjects)
		if set.yearly {
			windows[0].From = windows[0].To.AddDate(-1, 0, 0)
		}
		want, err := metering.MeterTotalsMany(ctx, conn, windows)
		if err != nil {
			b.Fatal(err)
		}
		for _, reader := range []struct {
			name  string
			count func(context.Context, driver.Conn, []metering.MeterWindow) ([]map[string]decimal.Decimal, error)
		}{{"base", metering.MeterTotalsMany}, {"rollup", metering.MeterTotalsRollupMany}} {
			b.Run(set.name+"/"+reader.name, func(b *testing.B) {
				var got []map[string]decimal.Decimal
				for b.Loop() {
					if got, err = reader.count(ctx, conn, windows); err != nil {
						b.Fatal(err)
					}
				}
				for i := range windows {
					for _, m := range set.meters {
						if !got[i][m.Slug].Equal(want[i][m.Slug]) || want[i]["calls"].IsZero() {
							b.Fatalf("window %d meter %s = %s, want %s (calls %s)", i, m.Slug, got[i][m.Slug], want[i][m.Slug], want[i]["calls"])
						}
					}
				}
				b.ReportMetric(float64(len(windows))*float64(b.N)/b.Elapsed().Seconds(), "periods/s")
			})
		}
	}
}

// benchWindows is one period of about a month per subscription, each
// starting at its own second of the first day.
func benchWindows(meters []metering.Meter, start time.Time, subjects int) []metering.MeterWindow {
	r := rand.New(rand.NewPCG(1, 2))
	windows := make([]metering.MeterWindow, subjects)
	for i := range windows {
		from := start.Add(time.Duration(r.IntN(86400)) * time.Second)
		windows[i] = metering.MeterWindow{Subject: fmt.Sprintf("sub_%d", i), Meters: meters, From: from, To: from.AddDate(0, 1, 0).Add(-36 * time.Hour)}
	}
	return windows
}

// TestRollupRefusesAsBaseTable: a window the roll-up would serve refuses
// an invalid meter, or a slug listed twice, as MeterTotalsMany does,
// before anything is queried.
func TestRollupRefusesAsBaseTable(t *testing.T) {
	conn, _, _ := testenv.ClickHouseDB(t)
	setRollupBegan(t, conn, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	count := metering.Meter{Slug: "calls", Aggregation: metering.AggCount}
	for name, meters := range map[string][]metering.Meter{
		"invalid":   {{Slug: "calls", Aggregation: metering.AggSum, Field: metering.FieldKeyID}},
		"twice":     {count, count},
		"bad class": {{Slug: "calls", Aggregation: metering.AggCount, Filter: metering.Filter{StatusClasses: []string{"5xx"}}}},
	} {
		_, err := metering.MeterTotalsRollupMany(t.Context(), conn, []metering.MeterWindow{{Subject: "s", Meters: meters, From: from, To: from.AddDate(0, 1, 0)}})
		if !errors.Is(err, metering.ErrInvalidMeter) {
			t.Errorf("%s: error %v, want ErrInvalidMeter", name, err)
		}
	}
}

// TestRollupSuspectHourReadsBase: an hour usage_billing_suspect lists for
// a subject is counted from usage_events, not from the roll-up: rows the
// roll-up missed (written while its view was gone) are counted, and a
// roll-up row the base table lacks is not, in a window with edges around
// the hour. Another subject's hour, not listed, still reads the roll-up.
func TestRollupSuspectHourReadsBase(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	setRollupBegan(t, conn, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	hour := time.Date(2026, 3, 1, 5, 0, 0, 0, time.UTC)
	ghost := func(subject string) {
		t.Helper()
		err := conn.Exec(ctx, `INSERT INTO usage_billing_hour (bucket, subject, method, status_class, requests, units_sum)
SELECT toDateTime(@h), @s, 'GET', toUInt8(2), countState(), sumState(toDecimal64(100, 6)) FROM system.one`,
			clickhouse.Named("h", hour.Unix()), clickhouse.Named("s", subject))
		if err != nil {
			t.Fatal(err)
		}
	}
	ghost("sus")
	ghost("other")
	if err := conn.Exec(ctx, "DROP TABLE usage_billing_hour_mv"); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 16))
	var missed []usage.Event
	for i := range 50 {
		e := randomEvent(r, i, "sus", hour, time.Hour)
		e.Data.Status, e.Data.Refusal = 200, ""
		missed = append(missed, e)
	}
	insertMeterEvents(t, conn, missed)
	if err := conn.Exec(ctx, "INSERT INTO usage_billing_suspect (subject, hour, recorded_at) SELECT 'sus', toDateTime(@h), now() FROM system.one",
		clickhouse.Named("h", hour.Unix())); err != nil {
		t.Fatal(err)
	}
	meters := []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits},
	}
	windows := []metering.MeterWindow{
		{Subject: "sus", Meters: meters, From: hour.Add(-90 * time.Minute), To: hour.Add(150 * time.Minute)},
		{Subject: "other", Meters: meters, From: hour.Add(-90 * time.Minute), To: hour.Add(150 * time.Minute)},
	}
	got, err := metering.MeterTotalsRollupMany(ctx, conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	want, err := metering.MeterTotalsMany(ctx, conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	for _, slug := range []string{"calls", "units"} {
		if !got[0][slug].Equal(want[0][slug]) || want[0][slug].IsZero() {
			t.Errorf("suspect hour: %s = %s from the roll-up path, %s from the base table", slug, got[0][slug], want[0][slug])
		}
	}
	if !got[1]["calls"].Equal(decimal.NewFromInt(1)) {
		t.Errorf("an hour not suspect: calls = %s, want 1 from the roll-up row", got[1]["calls"])
	}
}
