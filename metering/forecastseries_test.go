package metering_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// MeterSeries' days equal MeterTotals over each day's window on the base
// table, for meters the roll-up serves (read from it after its start,
// from usage_events before) and a route meter (usage_events throughout);
// max and unique_count are left out, and so are the days before from.
func TestMeterSeriesEqualsDailyTotals(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 18))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const days = 6
	// The series' days end at 07:00, not at midnight; the roll-up serves
	// from day 3's 12:00 on.
	end := start.Add(days*24*time.Hour + 7*time.Hour)
	setRollupBegan(t, conn, start.Add(3*24*time.Hour+11*time.Hour))
	var events []usage.Event
	for i := range 3000 {
		e := randomEvent(r, i, "sub_s", start, end.Sub(start))
		e.Time = edgeTime(r, start, int(end.Sub(start)/time.Hour))
		events = append(events, e)
	}
	insertMeterEvents(t, conn, events)
	meters := []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount, Filter: metering.Filter{Methods: []string{"GET", "POST"}}},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits, Filter: metering.Filter{StatusClasses: []string{"2xx"}}},
		{Slug: "bytes", Aggregation: metering.AggSum, Field: metering.FieldResponseBytes},
		{Slug: "items", Aggregation: metering.AggCount, Filter: metering.Filter{Routes: []string{"/users/*"}}},
		{Slug: "slowest", Aggregation: metering.AggMax, Field: metering.FieldLatencyMS},
		{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID},
	}
	from := start.Add(30 * time.Hour)
	got, err := metering.MeterSeries(ctx, conn, "sub_s", meters, from, end, days+1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["slowest"]; ok || len(got) != 4 {
		t.Fatalf("series of %d meters (%v); want the 4 count and sum meters", len(got), got)
	}
	origin := end.Add(-(days + 1) * 24 * time.Hour)
	nonzero := 0
	for d := range days + 1 {
		lo, hi := origin.Add(time.Duration(d)*24*time.Hour), origin.Add(time.Duration(d+1)*24*time.Hour)
		want, err := metering.MeterTotals(ctx, conn, "sub_s", meters[:4], laterOf(lo, from), hi)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range meters[:4] {
			w := want[m.Slug]
			if hi.Before(from) {
				w = decimal.Zero
			}
			if !got[m.Slug][d].Equal(w) {
				t.Errorf("day %d [%s, %s), %s: series %s, totals %s", d, lo, hi, m.Slug, got[m.Slug][d], w)
			}
			if !w.IsZero() {
				nonzero++
			}
		}
	}
	items := decimal.Zero
	for _, v := range got["items"] {
		items = items.Add(v)
	}
	if nonzero < 16 || items.IsZero() {
		t.Fatalf("only %d non-zero figures: the data proves nothing", nonzero)
	}
	if _, err := metering.MeterSeries(ctx, conn, "sub_s", meters, from, end, metering.MaxSeriesDays+1); err == nil {
		t.Error("a series longer than MaxSeriesDays was read")
	}
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// MeterTotalsAt equals MeterTotals over [from, at) for each instant, for
// meters of every aggregation, with instants on whole hours (the roll-up
// serves) and at any second (the base table), repeated instants too.
func TestMeterTotalsAtEqualsTotals(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 19))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const hours = 72
	setRollupBegan(t, conn, start.Add(20*time.Hour+10*time.Minute))
	var events []usage.Event
	for i := range 3000 {
		e := randomEvent(r, i, "sub_t", start, hours*time.Hour)
		e.Time = edgeTime(r, start, hours)
		events = append(events, e)
	}
	insertMeterEvents(t, conn, events)
	meters := []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount, Filter: metering.Filter{Methods: []string{"GET"}}},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits},
		{Slug: "users", Aggregation: metering.AggSum, Field: metering.FieldRequestBytes, Filter: metering.Filter{Routes: []string{"/users/*"}}},
		{Slug: "slowest", Aggregation: metering.AggMax, Field: metering.FieldLatencyMS, Filter: metering.Filter{StatusClasses: []string{"2xx"}}},
		{Slug: "biggest", Aggregation: metering.AggMax, Field: metering.FieldUnits},
		{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID, Filter: metering.Filter{Methods: []string{"GET", "POST"}}},
	}
	for _, whole := range []bool{true, false} {
		from := start.Add(time.Duration(r.IntN(5)) * time.Hour)
		if !whole {
			from = from.Add(time.Duration(r.IntN(3600)) * time.Second)
		}
		var at []time.Time
		for t := from; t.Before(start.Add(hours * time.Hour)); {
			step := time.Duration(1+r.IntN(9)) * time.Hour
			if !whole {
				step = time.Duration(r.IntN(9*3600)) * time.Second
			}
			t = t.Add(step)
			at = append(at, t)
		}
		got, err := metering.MeterTotalsAt(ctx, conn, "sub_t", meters, from, at)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range at {
			want, err := metering.MeterTotals(ctx, conn, "sub_t", meters, from, a)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range meters {
				if !got[i][m.Slug].Equal(want[m.Slug]) {
					t.Errorf("whole hours %v, [%s, %s) %s: %s, MeterTotals %s", whole, from, a, m.Slug, got[i][m.Slug], want[m.Slug])
				}
			}
		}
		last := got[len(got)-1]
		if last["calls"].IsZero() || last["keys"].IsZero() || last["slowest"].IsZero() || last["users"].IsZero() {
			t.Fatalf("totals %v: the data proves nothing", last)
		}
	}
	if _, err := metering.MeterTotalsAt(ctx, conn, "sub_t", meters, start, []time.Time{start.Add(time.Hour), start}); err == nil {
		t.Error("instants out of order were taken")
	}
}
