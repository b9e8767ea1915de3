package billing

import (
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
)

// TestClosePeriodReadsRollup: the close counts whole hours from the
// billing roll-up. A roll-up row the base table lacks (one GET of 7 units,
// written straight into usage_billing_hour, in an hour of the period)
// shows in the snapshot; with Config.SnapshotBaseTable it does not. The
// events at the period's first and last seconds count either way.
func TestClosePeriodReadsRollup(t *testing.T) {
	t.Parallel()
	start, end := day(2026, 3, 1), day(2026, 4, 1)
	for _, c := range []struct {
		base         bool
		calls, units string
	}{{false, "4", "11.5"}, {true, "3", "4.5"}} {
		f := periodSetup(t)
		ctx := t.Context()
		if c.base {
			svc, err := New(Config{Pool: f.pool, ClickHouse: f.ch, Logger: testenv.Logger(t), Grace: time.Hour, SnapshotBaseTable: true})
			if err != nil {
				t.Fatal(err)
			}
			f.svc = svc
		}
		// The roll-up began before the period, so it serves all of it.
		if err := f.ch.Exec(ctx, "INSERT INTO usage_billing_since SELECT toDateTime(@b)", clickhouse.Named("b", day(2026, 1, 1).Unix())); err != nil {
			t.Fatal(err)
		}
		sub := f.subscribe(start, start, end, nil)
		f.events(sub, get(start, "1"), get(day(2026, 3, 5), "1.5"), get(end.Add(-time.Second), "2"))
		err := f.ch.Exec(ctx, `INSERT INTO usage_billing_hour (bucket, subject, api_id, method, status_class, requests, units_sum)
SELECT toDateTime(@h), @sub, '', 'GET', toUInt8(2), countState(), sumState(toDecimal64(7, 6)) FROM system.one`,
			clickhouse.Named("h", day(2026, 3, 10).Add(5*time.Hour).Unix()), clickhouse.Named("sub", sub.String()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.EnsurePeriods(ctx, end); err != nil {
			t.Fatal(err)
		}
		if n, err := f.svc.ClosePeriods(ctx, end.Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("ClosePeriods = %d, %v; want 1", n, err)
		}
		id, _, _ := f.period(sub, start)
		segs, _, err := f.svc.SegmentsFor(ctx, id)
		if err != nil || len(segs) != 1 {
			t.Fatalf("SegmentsFor = %+v, %v; want one segment", segs, err)
		}
		for m, q := range map[string]string{"calls": c.calls, "units": c.units} {
			if !segs[0].Usage[m].Equal(decimal.RequireFromString(q)) {
				t.Errorf("base table only %v: usage of %s = %s; want %s", c.base, m, segs[0].Usage[m], q)
			}
		}
	}
}
