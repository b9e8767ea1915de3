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
