package metering_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// TestMeterTotalsManySegments: random events of several subscriptions,
// each subscription's month cut into segments at random seconds (as plan
// changes cut a billing period), some windows empty or without meters:
// MeterTotalsMany answers every window as the Go fold does, and
// ThroughOffsets gives each window the highest offset per partition
// of its subject's rows in it.
func TestMeterTotalsManySegments(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 16))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	month := 31 * 24 * time.Hour
	subjects := []string{"sub_a", "sub_b", "sub_c", "sub_d"}
	var events []usage.Event
	for i := range 3000 {
		events = append(events, randomEvent(r, i, subjects[r.IntN(len(subjects))], start.Add(-24*time.Hour), month+48*time.Hour))
	}
	insertMeterEvents(t, conn, events)
	paths := make([]string, 0, len(events))
	for _, e := range events {
		paths = append(paths, e.Data.Path)
	}
	meters := make([]metering.Meter, 12)
	for i := range meters {
		meters[i] = randomMeter(r, fmt.Sprintf("m%d", i), paths)
	}

	var windows []metering.MeterWindow
	for _, s := range subjects {
		cuts := []time.Time{start}
		for range r.IntN(4) {
			cuts = append(cuts, cuts[len(cuts)-1].Add(time.Duration(r.Int64N(int64(7*24*time.Hour)))+time.Duration(r.IntN(1000))*time.Millisecond))
		}
		cuts = append(cuts, start.Add(month))
		for i := range len(cuts) - 1 {
			windows = append(windows, metering.MeterWindow{Subject: s, Meters: meters, From: cuts[i], To: cuts[i+1]})
		}
	}
	// A window without meters, an empty one and one of no rows.
	windows = append(windows,
		metering.MeterWindow{Subject: "sub_a", From: start, To: start.Add(month)},
		metering.MeterWindow{Subject: "sub_b", Meters: meters, From: start.Add(time.Hour), To: start.Add(time.Hour)},
		metering.MeterWindow{Subject: "sub_none", Meters: meters, From: start, To: start.Add(month)})

	got, err := metering.MeterTotalsMany(ctx, conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(windows) {
		t.Fatalf("MeterTotalsMany answered %d windows; want %d", len(got), len(windows))
	}
	for i, w := range windows {
		want := goMeterTotals(w.Meters, events, w.Subject, w.From, w.To, nil)
		if len(got[i]) != len(want) {
			t.Fatalf("window %d (%s %s–%s): %d meters; want %d", i, w.Subject, w.From, w.To, len(got[i]), len(want))
		}
		for slug, v := range want {
			if !got[i][slug].Equal(v) {
				t.Errorf("window %d (%s %s–%s), meter %s = %s; want %s", i, w.Subject, w.From, w.To, slug, got[i][slug], v)
			}
		}
	}

	offs := make([]metering.OffsetWindow, len(windows))
	for i, w := range windows {
		offs[i] = metering.OffsetWindow{Subject: w.Subject, From: w.From, To: w.To}
	}
	through, err := metering.ThroughOffsets(ctx, conn, offs)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range offs {
		want := map[int32]int64{}
		if w.To.After(w.From) {
			from, to := w.From.Truncate(time.Second), w.To.Truncate(time.Second)
			for j, e := range events {
				if e.Subject == w.Subject && !e.Time.Before(from) && e.Time.Before(to) {
					p, o := eventOffset(j)
					if cur, ok := want[p]; !ok || o > cur {
						want[p] = o
					}
				}
			}
		}
		if fmt.Sprint(through[i]) != fmt.Sprint(want) {
			t.Errorf("ThroughOffsets window %d (%s %s–%s) = %v; want %v", i, w.Subject, w.From, w.To, through[i], want)
		}
	}
}

// TestSnapshotReadsManySubjects: more windows than one query holds, each
// query far past ClickHouse's default max_query_size once its subjects
// are bound: MeterTotalsMany and ThroughOffsets still answer every
// window, the one subject with rows included.
func TestSnapshotReadsManySubjects(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(1, 2))
	var events []usage.Event
	for i := range 30 {
		events = append(events, randomEvent(r, i, "busy", start, 24*time.Hour))
	}
	insertMeterEvents(t, conn, events)
	count := metering.Meter{Slug: "calls", Aggregation: metering.AggCount}
	var (
		windows []metering.MeterWindow
		offs    []metering.OffsetWindow
	)
	for i := range 12000 {
		subject := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
		if i == 11000 {
			subject = "busy"
		}
		windows = append(windows, metering.MeterWindow{Subject: subject, Meters: []metering.Meter{count}, From: start, To: start.Add(24 * time.Hour)})
		offs = append(offs, metering.OffsetWindow{Subject: subject, From: start, To: start.Add(24 * time.Hour)})
	}
	totals, err := metering.MeterTotalsMany(ctx, conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	through, err := metering.ThroughOffsets(ctx, conn, offs)
	if err != nil {
		t.Fatal(err)
	}
	want := goMeterTotals([]metering.Meter{count}, events, "busy", start, start.Add(24*time.Hour), nil)["calls"]
	for i := range windows {
		wantCalls, wantParts := "0", 0
		if i == 11000 {
			wantCalls, wantParts = want.String(), 3
		}
		if totals[i]["calls"].String() != wantCalls || len(through[i]) != wantParts {
			t.Fatalf("window %d (%s): calls %s, offsets %v; want calls %s and offsets of %d partitions", i, windows[i].Subject, totals[i]["calls"], through[i], wantCalls, wantParts)
		}
	}
}
