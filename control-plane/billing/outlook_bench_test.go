package billing

import (
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
)

// outlookBench is a subscription in the middle of its period with n
// events spread over its last 28 days, a plan change on the 11th (a
// route meter in the second version), the billing roll-up serving every
// whole hour.
func outlookBench(b *testing.B, n int) (*Service, uuid.UUID) {
	b.Helper()
	f := periodSetup(b)
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	f.svc.now = func() time.Time { return now }
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	if err := f.ch.Exec(b.Context(), "INSERT INTO usage_billing_since SELECT toDateTime(@b)", clickhouse.Named("b", start.Add(-48*time.Hour).Unix())); err != nil {
		b.Fatal(err)
	}
	sub := f.subscribe(start, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), nil)
	f.changePlan(sub, f.v2, time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC))
	from := now.Add(-28 * 24 * time.Hour)
	step := 28 * 24 * time.Hour / time.Duration(n)
	evs := make([]ev, 0, 50000)
	for i := range n {
		evs = append(evs, get(from.Add(time.Duration(i)*step), "1.5"))
		if len(evs) == cap(evs) || i == n-1 {
			f.events(sub, evs...)
			evs = evs[:0]
		}
	}
	return f.svc, sub
}

// BenchmarkOutlook: a subscription's outlook (its preview, 28 days of
// history per meter, the projection rated three times) over 200,000
// events.
func BenchmarkOutlook(b *testing.B) {
	svc, sub := outlookBench(b, 200_000)
	for b.Loop() {
		if _, err := svc.Outlook(b.Context(), sub); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCostByDay: 30 days of cost in Asia/Kolkata (the base table
// at the half-hour bounds) and in UTC (the roll-up's hours) over the same
// events, across two periods.
func BenchmarkCostByDay(b *testing.B) {
	svc, sub := outlookBench(b, 200_000)
	to := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		b.Fatal(err)
	}
	for _, loc := range []*time.Location{time.UTC, kolkata} {
		b.Run(loc.String(), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := svc.CostByDay(b.Context(), sub, to.AddDate(0, 0, -30), to, loc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
