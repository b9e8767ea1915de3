package billing

import (
	"testing"
	"time"
)

// Days are cut where their dates begin: in zones whose clocks skip
// midnight (Santiago on 2026-09-06, Havana on 2026-03-08) every date of
// the year is labeled once, and each bound is the first instant of its
// date.
func TestDayBoundsWhereClocksSkipMidnight(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"America/Santiago", "America/Havana", "Asia/Kolkata", "America/New_York"} {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		from := time.Date(2026, 1, 1, 0, 0, 0, 0, loc)
		to := from.AddDate(1, 0, 0)
		b := dayBounds(from, to, loc)
		if len(b)-1 != 365 {
			t.Errorf("%s: %d days in 2026, want 365", name, len(b)-1)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(b); i++ {
			l := b[i].In(loc)
			label := l.Format(time.DateOnly)
			if seen[label] {
				t.Errorf("%s: two days labeled %s (bound %s)", name, label, l)
			}
			seen[label] = true
			if i > 0 && b[i].Add(-time.Second).In(loc).Format(time.DateOnly) == label {
				t.Errorf("%s: day %s starts at %s, after its first instant", name, label, l)
			}
		}
	}
	// Santiago's clocks go from 00:00 to 01:00 on 2026-09-06: that day
	// starts at 01:00 local (04:00 UTC) and lasts 23 hours.
	loc, _ := time.LoadLocation("America/Santiago")
	from := time.Date(2026, 9, 5, 0, 0, 0, 0, loc)
	b := dayBounds(from, from.AddDate(0, 0, 3), loc)
	want := time.Date(2026, 9, 6, 4, 0, 0, 0, time.UTC)
	if len(b) < 3 || !b[1].Equal(want) || b[1].In(loc).Format(time.DateOnly) != "2026-09-06" {
		t.Fatalf("Santiago bounds %v, want the second at %s labeled 2026-09-06", b, want)
	}
	if got := b[2].Sub(b[1]); got != 23*time.Hour {
		t.Errorf("Santiago's 2026-09-06 lasts %s, want 23h", got)
	}
}
