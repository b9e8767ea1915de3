package billing

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
)

// The days of a period, rated at the margin, sum to the preview's usage
// lines exactly, across a plan change, included units and rounding to
// the cent; days after now and before the subscription cost nothing.
func TestCostByDaySumsToThePreviewsUsage(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	start, end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	f.svc.now = func() time.Time { return now }
	f.exec(`UPDATE plan_version_charges SET included_units = 1 WHERE plan_version_id = $1
		AND meter_id = (SELECT id FROM meters WHERE api_id = $2 AND slug = 'units')`, f.v1, f.api)
	sub := f.subscribe(start, start, end, nil)
	change := time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)
	f.changePlan(sub, f.v2, change)
	var evs []ev
	for d := range 19 {
		at := start.Add(time.Duration(d)*24*time.Hour + time.Duration(d)*time.Hour)
		evs = append(evs, get(at, "0.333"), get(at.Add(time.Minute), "1.111"))
	}
	evs = append(evs, get(now.Add(time.Hour), "50")) // after now
	f.events(sub, evs...)

	var customer uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `SELECT organization_id FROM subscriptions WHERE id = $1`, sub).Scan(&customer); err != nil {
		t.Fatal(err)
	}
	inv, err := f.svc.Preview(t.Context(), identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: customer}, sub)
	if err != nil {
		t.Fatal(err)
	}
	usage := decimal.Zero
	for _, l := range inv.Lines {
		if l.Kind == metering.LineUsage {
			usage = usage.Add(l.Amount)
		}
	}
	cur, days, err := f.svc.CostByDay(t.Context(), sub, start.AddDate(0, 0, -3), end, time.UTC)
	if err != nil {
		t.Fatalf("CostByDay: %v", err)
	}
	if cur != "USD" || len(days) != 33 || days[0].Day != "2026-10-29" || days[32].Day != "2026-11-30" {
		t.Fatalf("CostByDay = %s, %d days from %v; want USD, 33 days from 2026-10-29 to 2026-11-30", cur, len(days), days[0])
	}
	sum, nonzero := decimal.Zero, 0
	for i, d := range days {
		sum = sum.Add(d.Cost)
		if !d.Cost.IsZero() {
			nonzero++
		}
		if (i < 3 || i > 3+19) && !d.Cost.IsZero() {
			t.Errorf("day %s costs %s; want nothing (before the subscription or after now)", d.Day, d.Cost)
		}
	}
	if !sum.Equal(usage) || usage.IsZero() || nonzero < 15 {
		t.Errorf("days sum to %s (%d not zero); the preview's usage lines to %s", sum, nonzero, usage)
	}
}

// A day in a half-hour zone is cut at local midnight: in Asia/Kolkata
// (UTC+5:30) 18:29:59 UTC is the evening before and 18:30:00 UTC the next
// day's first second.
func TestCostByDayCutsAtLocalMidnight(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	start, end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.svc.now = func() time.Time { return time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC) }
	sub := f.subscribe(start, start, end, nil)
	midnight := time.Date(2026, 11, 2, 18, 30, 0, 0, time.UTC)
	// Each call costs 0.01 (v1's calls) and 0.5 a unit.
	f.events(sub, get(midnight.Add(-time.Second), "0"), get(midnight, "0"), get(midnight.Add(10*time.Hour), "1"))
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 11, 2, 0, 0, 0, 0, kolkata)
	_, days, err := f.svc.CostByDay(t.Context(), sub, from, from.AddDate(0, 0, 3), kolkata)
	if err != nil {
		t.Fatal(err)
	}
	want := []DayCost{{"2026-11-02", dec("0.01")}, {"2026-11-03", dec("0.52")}, {"2026-11-04", dec("0")}}
	if len(days) != len(want) {
		t.Fatalf("CostByDay = %v; want %v", days, want)
	}
	for i, d := range days {
		if d.Day != want[i].Day || !d.Cost.Equal(want[i].Cost) {
			t.Errorf("day %d = %s %s; want %s %s", i, d.Day, d.Cost, want[i].Day, want[i].Cost)
		}
	}
	// UTC cuts the same events into one day.
	_, utc, err := f.svc.CostByDay(t.Context(), sub, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC), time.UTC)
	if err != nil || len(utc) != 2 || !utc[0].Cost.Equal(dec("0.02")) || !utc[1].Cost.Equal(dec("0.51")) {
		t.Errorf("CostByDay in UTC = %v, %v; want 0.02 and 0.51", utc, err)
	}
}

// A window without a zone, empty, reversed or longer than MaxCostDays is
// refused before anything is read.
func TestCostByDayRefusesBadWindows(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	sub := f.subscribe(at, at, at.AddDate(0, 1, 0), nil)
	for name, w := range map[string]struct {
		from, to time.Time
		loc      *time.Location
	}{
		"no zone":  {at, at.Add(time.Hour), nil},
		"empty":    {at, at, time.UTC},
		"reversed": {at, at.Add(-time.Hour), time.UTC},
		"too long": {at, at.AddDate(0, 0, MaxCostDays+1), time.UTC},
	} {
		if _, _, err := f.svc.CostByDay(t.Context(), sub, w.from, w.to, w.loc); !errors.Is(err, ErrInvalidWindow) {
			t.Errorf("%s: CostByDay = %v; want ErrInvalidWindow", name, err)
		}
	}
}

// A window across a plan change to another currency is refused rather
// than adding dollars and euros under one label; a window after the
// change answers in the new currency.
func TestCostByDayRefusesACurrencyChange(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	oct, nov := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	f.svc.now = func() time.Time { return now }
	eur := f.id(`INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, created_by)
		SELECT plan_id, 3, 'hybrid', 'EUR', 'month', 10, 'prov' FROM plan_versions WHERE id = $1 RETURNING id`, f.v1)
	f.exec(`INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price)
		SELECT $1, id, 'per_unit', 0.02 FROM meters WHERE api_id = $2 AND slug = 'calls'`, eur, f.api)
	sub := f.subscribe(oct, nov, nov.AddDate(0, 1, 0), nil)
	f.exec(`INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
		VALUES ($1, $2, $3, 'closed', $3)`, sub, oct, nov)
	f.changePlan(sub, eur, nov)
	f.events(sub, get(oct.Add(20*24*time.Hour), "1"), get(nov.Add(5*24*time.Hour), "1"))

	if _, _, err := f.svc.CostByDay(t.Context(), sub, oct.Add(14*24*time.Hour), now, time.UTC); !errors.Is(err, ErrCurrencyChange) {
		t.Errorf("window across USD → EUR: CostByDay = %v; want ErrCurrencyChange", err)
	}
	cur, days, err := f.svc.CostByDay(t.Context(), sub, nov, now, time.UTC)
	if err != nil || cur != "EUR" {
		t.Fatalf("window after the change: %s, %v; want EUR", cur, err)
	}
	sum := decimal.Zero
	for _, d := range days {
		sum = sum.Add(d.Cost)
	}
	if !sum.Equal(decimal.RequireFromString("0.02")) {
		t.Errorf("window after the change costs %s; want 0.02 (one call at 0.02 EUR)", sum)
	}
}
