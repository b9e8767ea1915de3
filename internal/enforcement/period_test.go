package enforcement_test

import (
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

// TestPeriodAtNeighbours: an event past the record's period counts into
// the next period of the same interval (the counter the control plane's
// roll will name), an earlier one into the one before; without a record,
// the calendar month.
func TestPeriodAtNeighbours(t *testing.T) {
	start := time.Date(2026, 3, 15, 10, 0, 0, 0, time.UTC)
	month := &enforcement.RecordedPeriod{Start: start, End: start.AddDate(0, 1, 0)}
	year := &enforcement.RecordedPeriod{Start: start, End: start.AddDate(1, 0, 0)}
	for _, c := range []struct {
		name       string
		sub        *enforcement.RecordedPeriod
		at         time.Time
		start, end time.Time
	}{
		{"inside", month, start.Add(time.Hour), start, start.AddDate(0, 1, 0)},
		{"just after", month, start.AddDate(0, 1, 0), start.AddDate(0, 1, 0), start.AddDate(0, 2, 0)},
		{"two periods on", month, start.AddDate(0, 2, 3), start.AddDate(0, 2, 0), start.AddDate(0, 3, 0)},
		{"late, the one before", month, start.Add(-time.Hour), start.AddDate(0, -1, 0), start},
		{"yearly, after", year, start.AddDate(1, 0, 1), start.AddDate(1, 0, 0), start.AddDate(2, 0, 0)},
		{"late, the rolled record's previous period", &enforcement.RecordedPeriod{
			Start: time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC), End: time.Date(2025, 4, 3, 0, 0, 0, 0, time.UTC),
			PrevStart: time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
		}, time.Date(2025, 2, 20, 0, 0, 0, 0, time.UTC), time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC), time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)},
		{"no record", nil, start, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)},
	} {
		got := enforcement.PeriodAt(c.sub, c.at)
		if !got.Start.Equal(c.start) || !got.End.Equal(c.end) {
			t.Errorf("%s: PeriodAt(%s) = [%s, %s); want [%s, %s)", c.name, c.at, got.Start, got.End, c.start, c.end)
		}
	}
}

// TestPeriodEndAnchored: periods end on the anchor's day at its time of
// day, held at the month's last day in shorter months, and come back to
// the anchor's day after them.
func TestPeriodEndAnchored(t *testing.T) {
	at := func(y int, m time.Month, d, h, mi int) time.Time { return time.Date(y, m, d, h, mi, 7, 0, time.UTC) }
	for _, c := range []struct {
		name     string
		anchor   time.Time
		interval string
		want     []time.Time // the boundaries from the anchor on
	}{
		{"monthly on the 31st", at(2026, 1, 31, 9, 30), "month",
			[]time.Time{at(2026, 1, 31, 9, 30), at(2026, 2, 28, 9, 30), at(2026, 3, 31, 9, 30), at(2026, 4, 30, 9, 30), at(2026, 5, 31, 9, 30), at(2026, 6, 30, 9, 30)}},
		{"monthly on the 31st, a leap February", at(2027, 12, 31, 23, 59), "month",
			[]time.Time{at(2027, 12, 31, 23, 59), at(2028, 1, 31, 23, 59), at(2028, 2, 29, 23, 59), at(2028, 3, 31, 23, 59)}},
		{"monthly on the 30th", at(2026, 1, 30, 0, 0), "month",
			[]time.Time{at(2026, 1, 30, 0, 0), at(2026, 2, 28, 0, 0), at(2026, 3, 30, 0, 0), at(2026, 4, 30, 0, 0)}},
		{"monthly on the 15th, as AddDate", at(2026, 11, 15, 12, 0), "month",
			[]time.Time{at(2026, 11, 15, 12, 0), at(2026, 12, 15, 12, 0), at(2027, 1, 15, 12, 0)}},
		{"yearly on Feb 29", at(2028, 2, 29, 6, 0), "year",
			[]time.Time{at(2028, 2, 29, 6, 0), at(2029, 2, 28, 6, 0), at(2030, 2, 28, 6, 0), at(2031, 2, 28, 6, 0), at(2032, 2, 29, 6, 0)}},
		{"yearly on Jan 31", at(2026, 1, 31, 6, 0), "year",
			[]time.Time{at(2026, 1, 31, 6, 0), at(2027, 1, 31, 6, 0)}},
	} {
		for i := 1; i < len(c.want); i++ {
			if got := enforcement.PeriodEndAnchored(c.want[i-1], c.interval, c.anchor); !got.Equal(c.want[i]) {
				t.Errorf("%s: PeriodEndAnchored(%s) = %s; want %s", c.name, c.want[i-1], got, c.want[i])
			}
			if got := enforcement.PeriodStartAnchored(c.want[i], c.interval, c.anchor); !got.Equal(c.want[i-1]) {
				t.Errorf("%s: PeriodStartAnchored(%s) = %s; want %s", c.name, c.want[i], got, c.want[i-1])
			}
		}
	}
}

// TestPeriodEndAnchoredOffBoundary: a start off the anchor's boundaries
// ends on the boundary 1 or 12 months after the last boundary at or before
// it: the first one after it for a monthly plan, the eleventh or twelfth
// month's for a yearly one, never later than the interval.
func TestPeriodEndAnchoredOffBoundary(t *testing.T) {
	d := func(y int, m time.Month, day, h int) time.Time { return time.Date(y, m, day, h, 0, 0, 0, time.UTC) }
	jan31, feb28 := d(2026, 1, 31, 0), d(2026, 2, 28, 0)
	for _, c := range []struct {
		anchor, start time.Time
		interval      string
		want          time.Time
	}{
		// Jan 31 + AddDate: Mar 3; the next boundary is Mar 31.
		{jan31, d(2026, 3, 3, 0), "month", d(2026, 3, 31, 0)},
		// Yearly: twelve months after the last boundary, Feb 28.
		{jan31, d(2026, 3, 3, 0), "year", d(2027, 2, 28, 0)},
		{feb28, d(2026, 3, 3, 0), "year", d(2027, 2, 28, 0)},
		// A time of day past the boundary's, the same day.
		{jan31, d(2026, 4, 30, 8), "month", d(2026, 5, 31, 0)},
		// A monthly subscription changed to yearly keeps its anchor.
		{jan31, d(2026, 4, 30, 0), "year", d(2027, 4, 30, 0)},
		{jan31, d(2026, 5, 31, 0), "year", d(2027, 5, 31, 0)},
	} {
		got := enforcement.PeriodEndAnchored(c.start, c.interval, c.anchor)
		if !got.Equal(c.want) {
			t.Errorf("PeriodEndAnchored(%s, %s, %s) = %s; want %s", c.start, c.interval, c.anchor, got, c.want)
		}
		if !got.After(c.start) || got.After(c.start.AddDate(0, 0, 366)) {
			t.Errorf("PeriodEndAnchored(%s, %s) = %s: not after the start, or more than a year on", c.start, c.interval, got)
		}
	}
}

// TestPeriodEndAnchoredOnSchedule: from any boundary of the anchor's
// schedule, the period is a whole interval, on the schedule again: the
// anchor's day and time of day 1 or 12 months on, held at a shorter
// month's last day; never a stub.
func TestPeriodEndAnchoredOnSchedule(t *testing.T) {
	t.Parallel()
	for _, interval := range []string{"month", "year"} {
		months := map[string]int{"month": 1, "year": 12}[interval]
		for _, d := range []int{1, 15, 28, 29, 30, 31} {
			anchor := time.Date(2027, 1, d, 23, 59, 59, 5, time.UTC)
			start := anchor
			for range 60 {
				end := enforcement.PeriodEndAnchored(start, interval, anchor)
				y, m, _ := start.Date()
				first := time.Date(y, m+time.Month(months), 1, 0, 0, 0, 0, time.UTC)
				wantDay := min(d, first.AddDate(0, 1, -1).Day())
				want := time.Date(first.Year(), first.Month(), wantDay, 23, 59, 59, 5, time.UTC)
				if !end.Equal(want) {
					t.Fatalf("%s, anchor %s: PeriodEndAnchored(%s) = %s; want %s", interval, anchor, start, end, want)
				}
				if shortest := time.Duration(28*months) * 24 * time.Hour; end.Sub(start) < shortest {
					t.Fatalf("%s, anchor %s: [%s, %s) is a stub", interval, anchor, start, end)
				}
				start = end
			}
		}
	}
}

// TestPeriodEndUnanchored: the rule periods were rolled by before anchors,
// which drifts after a short month.
func TestPeriodEndUnanchored(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		start    time.Time
		interval string
		want     time.Time
	}{
		{time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC), "month", time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)},
		{time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC), "month", time.Date(2026, 4, 3, 0, 0, 0, 0, time.UTC)},
		{time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), "year", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if got := enforcement.PeriodEndUnanchored(c.start, c.interval); !got.Equal(c.want) {
			t.Errorf("PeriodEndUnanchored(%s, %s) = %s; want %s", c.start, c.interval, got, c.want)
		}
	}
}

// TestPeriodAtAnchored: with the record's anchor, the processors name the
// periods the control plane's roll names across a clamped month end;
// without it, the unanchored step of records written before anchors.
func TestPeriodAtAnchored(t *testing.T) {
	d := func(y int, m time.Month, day int) time.Time { return time.Date(y, m, day, 10, 0, 0, 0, time.UTC) }
	anchor := d(2027, 12, 31)
	rec := &enforcement.RecordedPeriod{Start: d(2028, 1, 31), End: d(2028, 2, 29), Anchor: anchor}
	yearly := &enforcement.RecordedPeriod{Start: d(2028, 2, 29), End: d(2029, 2, 28), Anchor: d(2028, 2, 29)}
	for _, c := range []struct {
		name       string
		rec        *enforcement.RecordedPeriod
		at         time.Time
		start, end time.Time
	}{
		{"next, back on the 31st", rec, d(2028, 3, 1), d(2028, 2, 29), d(2028, 3, 31)},
		{"two on, clamped at Apr 30", rec, d(2028, 4, 2), d(2028, 3, 31), d(2028, 4, 30)},
		{"the one before", rec, d(2028, 1, 2), d(2027, 12, 31), d(2028, 1, 31)},
		{"two before, from the 30th", rec, d(2027, 12, 1), d(2027, 11, 30), d(2027, 12, 31)},
		{"yearly, Feb 28 then Feb 28", yearly, d(2029, 3, 1), d(2029, 2, 28), d(2030, 2, 28)},
		{"yearly, back to Feb 29", yearly, d(2032, 2, 29).Add(-time.Hour), d(2031, 2, 28), d(2032, 2, 29)},
		{"unanchored, as before", &enforcement.RecordedPeriod{Start: d(2028, 1, 31), End: d(2028, 3, 2)}, d(2028, 3, 5), d(2028, 3, 2), d(2028, 4, 2)},
	} {
		got := enforcement.PeriodAt(c.rec, c.at)
		if !got.Start.Equal(c.start) || !got.End.Equal(c.end) {
			t.Errorf("%s: PeriodAt(%s) = [%s, %s); want [%s, %s)", c.name, c.at, got.Start, got.End, c.start, c.end)
		}
	}
}

// BenchmarkPeriodAtAnchored is PeriodAt's hot path (an event inside the
// record's period) and its anchored step (an event of the next period).
func BenchmarkPeriodAtAnchored(b *testing.B) {
	anchor := time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC)
	rec := &enforcement.RecordedPeriod{Start: time.Date(2026, 3, 31, 10, 0, 0, 0, time.UTC), End: time.Date(2026, 4, 30, 10, 0, 0, 0, time.UTC), Anchor: anchor}
	inside, next := time.Date(2026, 4, 10, 0, 0, 0, 0, time.UTC), time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC)
	b.Run("inside", func(b *testing.B) {
		for b.Loop() {
			enforcement.PeriodAt(rec, inside)
		}
	})
	b.Run("next", func(b *testing.B) {
		for b.Loop() {
			enforcement.PeriodAt(rec, next)
		}
	})
}
