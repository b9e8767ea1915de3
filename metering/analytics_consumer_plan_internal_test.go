package metering

import (
	"sort"
	"strings"
	"testing"
	"time"
)

// TestPlanPiecesCoverExactly: in every zone, for windows with ragged and
// whole ends, the pieces cover the window exactly once, each is made of
// whole buckets of its table, and no bucket crosses a day start.
func TestPlanPiecesCoverExactly(t *testing.T) {
	for _, zone := range []string{"UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "America/Sao_Paulo", "Australia/Lord_Howe", "Pacific/Chatham"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range [][2]time.Time{
			{time.Date(2026, 3, 1, 10, 15, 30, 0, time.UTC), time.Date(2026, 4, 3, 19, 0, 10, 0, time.UTC)},
			{time.Date(2026, 10, 20, 0, 0, 0, 0, loc), time.Date(2026, 11, 10, 0, 0, 0, 0, loc)},
			{time.Date(2018, 11, 1, 0, 0, 0, 0, loc), time.Date(2018, 11, 6, 0, 0, 0, 0, loc)},
			{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)},
		} {
			from, to := w[0], w[1]
			cuts := DayStarts(from, to, loc)
			checkDayStarts(t, zone, from, to, loc, cuts)
			checkPlan(t, zone, planPieces(from, to, cuts), from, to, cuts)
		}
	}
}

func checkPlan(t *testing.T, zone string, p piecePlan, from, to time.Time, cuts []time.Time) {
	t.Helper()
	type piece struct {
		span
		table rollupTable
	}
	var all []piece
	for tbl, spans := range p {
		for _, s := range spans {
			all = append(all, piece{s, rollupTable(tbl)})
			if tbl != int(tableRaw) && (!s.from.Truncate(levels[tbl]).Equal(s.from) || !s.to.Truncate(levels[tbl]).Equal(s.to)) {
				t.Errorf("%s: %v of table %d is not whole buckets", zone, s, tbl)
			}
			for _, c := range cuts {
				if c.After(s.from) && c.Before(s.to) && (tbl == int(tableRaw) || !c.Truncate(levels[tbl]).Equal(c)) {
					t.Errorf("%s: %v of table %d crosses the day start %v", zone, s, tbl, c)
				}
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].from.Before(all[j].from) })
	at := from
	for _, x := range all {
		if !x.from.Equal(at) || !x.from.Before(x.to) {
			t.Fatalf("%s: pieces %v do not tile [%v, %v)", zone, all, from, to)
		}
		at = x.to
	}
	if !at.Equal(to) {
		t.Fatalf("%s: pieces end at %v; want %v", zone, at, to)
	}
}

// TestPlanPiecesCoarsest: 30 Kolkata days read hours, and minutes only
// in the hour around each half-hour midnight (half of it at the window's
// ends); 30 days of UTC days reads
// the day roll-up alone.
func TestPlanPiecesCoarsest(t *testing.T) {
	kol, _ := time.LoadLocation("Asia/Kolkata")
	from, to := time.Date(2026, 3, 1, 0, 0, 0, 0, kol), time.Date(2026, 3, 31, 0, 0, 0, 0, kol)
	var cuts []time.Time
	for d := from.AddDate(0, 0, 1); d.Before(to); d = d.AddDate(0, 0, 1) {
		cuts = append(cuts, d)
	}
	p := planPieces(from, to, cuts)
	if len(p[tableDay]) != 0 || len(p[tableRaw]) != 0 || len(p[tableHour]) != 30 || len(p[tableMinute]) != 31 {
		t.Errorf("Kolkata: %d day, %d hour, %d minute, %d raw ranges; want 0, 30, 31, 0",
			len(p[tableDay]), len(p[tableHour]), len(p[tableMinute]), len(p[tableRaw]))
	}
	for _, s := range p[tableMinute] {
		if d := s.to.Sub(s.from); d != time.Hour && !(d == 30*time.Minute && (s.from.Equal(from) || s.to.Equal(to))) {
			t.Errorf("Kolkata minute range %v: want one hour around a midnight", s)
		}
	}
	from, to = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)
	cuts = cuts[:0]
	for d := from.AddDate(0, 0, 1); d.Before(to); d = d.AddDate(0, 0, 1) {
		cuts = append(cuts, d)
	}
	p = planPieces(from, to, cuts)
	if len(p[tableDay]) != 1 || len(p[tableHour])+len(p[tableMinute])+len(p[tableRaw]) != 0 {
		t.Errorf("UTC: %v; want one day range", p)
	}
}

// checkDayStarts: each cut is the first instant of a new local date (the
// second before it is on the date before), and every date of the window
// after from's has its cut.
func checkDayStarts(t *testing.T, zone string, from, to time.Time, loc *time.Location, cuts []time.Time) {
	t.Helper()
	prev := from
	for _, c := range cuts {
		if !c.After(prev) || !c.Before(to) {
			t.Fatalf("%s: cut %v not after %v or not before %v", zone, c, prev, to)
		}
		before, at := c.Add(-time.Second).In(loc).Format(time.DateOnly), c.In(loc).Format(time.DateOnly)
		if before >= at {
			t.Errorf("%s: cut %v: the second before is on %s, the cut on %s", zone, c, before, at)
		}
		if want := prev.In(loc).AddDate(0, 0, 1).Format(time.DateOnly); at != want && prev.In(loc).Format(time.DateOnly) < want {
			y, m, d := prev.In(loc).Date()
			if at != time.Date(y, m, d+1, 12, 0, 0, 0, time.UTC).Format(time.DateOnly) {
				t.Errorf("%s: cut %v starts %s; want the date after %v", zone, c, at, prev.In(loc))
			}
		}
		prev = c
	}
	if last := to.Add(-time.Second).In(loc).Format(time.DateOnly); last != prev.In(loc).Format(time.DateOnly) {
		t.Errorf("%s: the window ends on %s but its last day starts on %s", zone, last, prev.In(loc).Format(time.DateOnly))
	}
}

// TestDayStartsSkippedMidnight: in America/Sao_Paulo, 2018-11-04 began at
// 01:00 (clocks went from 00:00 to 01:00, 03:00 UTC); the 23-hour day of
// America/New_York's 2026-03-08 is cut at its midnights.
func TestDayStartsSkippedMidnight(t *testing.T) {
	sp, _ := time.LoadLocation("America/Sao_Paulo")
	got := DayStarts(time.Date(2018, 11, 3, 12, 0, 0, 0, time.UTC), time.Date(2018, 11, 5, 12, 0, 0, 0, time.UTC), sp)
	want := []time.Time{time.Date(2018, 11, 4, 3, 0, 0, 0, time.UTC), time.Date(2018, 11, 5, 2, 0, 0, 0, time.UTC)}
	if len(got) != 2 || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) {
		t.Errorf("Sao Paulo: %v; want %v", got, want)
	}
	ny, _ := time.LoadLocation("America/New_York")
	got = DayStarts(time.Date(2026, 3, 7, 12, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 12, 0, 0, 0, time.UTC), ny)
	want = []time.Time{time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 4, 0, 0, 0, time.UTC)}
	if len(got) != 2 || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) {
		t.Errorf("New York: %v; want %v", got, want)
	}
}

// TestDayIndexSQL: days of 24 hours are counted by arithmetic; a window
// with a clock change, or whose first or last day is not 24 hours long,
// compares with each day start.
func TestDayIndexSQL(t *testing.T) {
	kol, _ := time.LoadLocation("Asia/Kolkata")
	ny, _ := time.LoadLocation("America/New_York")
	for _, tc := range []struct {
		loc        *time.Location
		from, to   time.Time
		arithmetic bool
	}{
		{kol, time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), time.Date(2026, 3, 20, 3, 0, 0, 0, time.UTC), true},
		{ny, time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), time.Date(2026, 3, 20, 3, 0, 0, 0, time.UTC), false},
		// The window ends on 03-08, New York's 23-hour day.
		{ny, time.Date(2026, 3, 6, 10, 0, 0, 0, time.UTC), time.Date(2026, 3, 8, 23, 0, 0, 0, time.UTC), true},
		{ny, time.Date(2026, 3, 6, 10, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 4, 30, 0, 0, time.UTC), false},
	} {
		got := dayIndexSQL("t", tc.from, tc.to, DayStarts(tc.from, tc.to, tc.loc))
		if strings.Contains(got, "intDiv") != tc.arithmetic {
			t.Errorf("%s %v to %v: %s; want arithmetic %t", tc.loc, tc.from, tc.to, got, tc.arithmetic)
		}
	}
}

// TestAnalyticsSQLBounded: a window of 400 days in zones whose midnight is
// not a whole UTC hour, with ragged ends, cuts each roll-up into about
// 400 ranges; the query must not spell each out (ClickHouse 18.16 spent
// tens of seconds analysing such an OR chain), only a short number per
// day at most.
func TestAnalyticsSQLBounded(t *testing.T) {
	for _, zone := range []string{"Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham", "Australia/Lord_Howe"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		to := time.Date(2026, 12, 1, 0, 0, 7, 0, time.UTC)
		from := to.Add(-400*24*time.Hour - 13*time.Minute)
		cuts := DayStarts(from, to, loc)
		sql := analyticsSQL(planPieces(from, to, cuts), cuts, true, false)
		// Across a clock change each table's piece lists the day starts
		// for arrayCount (11 bytes a day, up to 4 pieces); at most two
		// sets of hours (8 bytes each a day); and the query's frame. The
		// OR chain took about 150 bytes a day.
		if limit := 4000 + len(cuts)*(4*12+2*9); len(sql) > limit {
			t.Errorf("%s: %d days make %d bytes of SQL; want at most %d", zone, len(cuts)+1, len(sql), limit)
		}
		if n := strings.Count(sql, " OR "); n > 3*maxOrRanges {
			t.Errorf("%s: %d ORs in the query", zone, n)
		}
	}
}
