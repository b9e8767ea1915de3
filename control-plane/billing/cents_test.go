package billing

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// Two months of a hybrid subscription through the billing cycle, with
// ClickHouse: March on v1 (base 10; calls 0.01, units 0.5) until a change
// to v2 (base 30; calls 0.005, units 0.4, gets 0.001) at the start of Mar
// 16, a 10% promotion for two periods, then April on v2, a late March
// event found after March was invoiced and a provider's correction of
// March's calls. Both invoices match, to the cent, what is computed here
// from the events written.
func TestTwoInvoicesToTheCent(t *testing.T) {
	f := periodSetup(t)
	ctx := t.Context()
	clock := testenv.NewClock(day(2026, 4, 1).Add(time.Hour))
	svc, err := New(Config{Pool: f.pool, ClickHouse: f.ch, Logger: testenv.Logger(t), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mar, apr, may := day(2026, 3, 1), day(2026, 4, 1), day(2026, 5, 1)
	change := day(2026, 3, 16)
	sub := f.subscribe(mar, may, day(2026, 6, 1), nil)
	f.changePlan(sub, f.v2, change)
	var issuer, customer uuid.UUID
	if err := f.pool.QueryRow(ctx, `SELECT a.organization_id, s.organization_id FROM subscriptions s JOIN apis a ON a.id = s.api_id
		WHERE s.id = $1`, sub).Scan(&issuer, &customer); err != nil {
		t.Fatal(err)
	}
	promo := f.id(`INSERT INTO promotions (organization_id, code, kind, value, duration, duration_periods, created_by)
		VALUES ($1, 'TENOFF', 'percent_off', 10, 'repeating', 2, 'prov') RETURNING id`, issuer)
	f.exec(`INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
		VALUES ($1, $2, $3, 'cons', $4)`, promo, sub, customer, mar)

	// March: 3 calls of 1.5 units on v1, 10 calls of 2 units on v2.
	var evs []ev
	for i := range 3 {
		evs = append(evs, get(mar.Add(time.Duration(i+1)*time.Hour), "1.5"))
	}
	for i := range 10 {
		evs = append(evs, get(change.Add(time.Duration(i+1)*time.Hour), "2"))
	}
	f.events(sub, evs...)
	if _, err := svc.RunCycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Base 10; the 16 days of 31 left at the change: -10 and +30 times
	// 16/31; then the usage, each line rounded once.
	credit, charge := roundCents(-10.0*16/31), roundCents(30.0*16/31) // -5.16, 15.48
	lines := []float64{10, credit, charge, 3 * 0.01, 4.5 * 0.5, 10 * 0.005, 20 * 0.4, 10 * 0.001}
	march := invoiceTotal(lines, 0.10, nil)
	first := f.invoiceOf(t, svc, sub, mar)
	if got := first.Total.StringFixed(2); got != fmt.Sprintf("%.2f", march) || first.Status != StatusOpen {
		t.Fatalf("March invoice = %s %s; want open %.2f\n%+v", first.Status, got, march, first.Lines)
	}

	// A late March event (v2's segment), a correction of 100 calls.
	f.events(sub, get(day(2026, 3, 20), "3"))
	clock.Set(day(2026, 4, 20))
	if _, err := svc.CreateAdjustment(ctx, identity.Actor{Subject: "prov", Role: identity.RoleProvider, OrgID: issuer}, sub,
		AdjustmentInput{BillingPeriodID: first.BillingPeriodID, Meter: new("calls"), Quantity: new(dec("100")), Reason: "uncounted batch"}); err != nil {
		t.Fatal(err)
	}
	// April: 10 calls of 1 unit on v2.
	evs = evs[:0]
	for i := range 10 {
		evs = append(evs, get(apr.Add(time.Duration(i+1)*time.Hour), "1"))
	}
	f.events(sub, evs...)
	clock.Set(may.Add(time.Hour))
	if _, err := svc.RunCycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Discounted: base 30 and April's usage. Not discounted: the
	// correction (100 calls at 0.005) and the late event (a call, 3
	// units, a get) priced by v2.
	april := invoiceTotal([]float64{30, 10 * 0.005, 10 * 0.4, 10 * 0.001}, 0.10,
		[]float64{100 * 0.005, 1 * 0.005, 3 * 0.4, 1 * 0.001})
	second := f.invoiceOf(t, svc, sub, apr)
	if got := second.Total.StringFixed(2); got != fmt.Sprintf("%.2f", april) {
		t.Fatalf("April invoice = %s; want %.2f\n%+v", got, april, second.Lines)
	}
	t.Logf("March %s (%s), April %s (%s)", first.Total, *first.Number, second.Total, *second.Number)
	for _, id := range []uuid.UUID{first.ID, second.ID} {
		explainZero(t, svc, id)
	}
}

// roundCents rounds to cents half away from zero, as every line is.
func roundCents(x float64) float64 {
	if x < 0 {
		return -roundCents(-x)
	}
	return float64(int64(x*100+0.5+1e-9)) / 100
}

// invoiceTotal is the sum of the lines, each rounded, less pct of each
// (rounded per line), plus the adjustments, each rounded.
func invoiceTotal(lines []float64, pct float64, adjustments []float64) float64 {
	total := 0.0
	for _, l := range lines {
		l = roundCents(l)
		total += l - roundCents(l*pct)
	}
	for _, a := range adjustments {
		total += roundCents(a)
	}
	return roundCents(total)
}

// invoiceOf is the invoice of sub's period starting at start.
func (f *periodFixture) invoiceOf(t *testing.T, svc *Service, sub uuid.UUID, start time.Time) Invoice {
	t.Helper()
	id, _, _ := f.period(sub, start)
	var inv uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `SELECT id FROM invoices WHERE billing_period_id = $1`, id).Scan(&inv); err != nil {
		t.Fatalf("invoice of the period at %s: %v", start, err)
	}
	out, err := svc.Invoice(t.Context(), identity.System, inv)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Over three months of random plan changes, random events and late
// events after each invoice, the usage the invoices bill per meter (usage
// lines, and late usage adjustment lines) adds up to every billable event
// written: nothing billed twice, nothing missed.
func TestInvoicedUsageEqualsEvents(t *testing.T) {
	f := periodSetup(t)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(16, 3))
	months := []time.Time{day(2026, 3, 1), day(2026, 4, 1), day(2026, 5, 1), day(2026, 6, 1)}
	clock := testenv.NewClock(months[1])
	svc, err := New(Config{Pool: f.pool, ClickHouse: f.ch, Logger: testenv.Logger(t), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	sub := f.subscribe(months[0], months[3], months[3].AddDate(0, 1, 0), nil)
	wantCalls, wantUnits := 0, decimal.Zero
	at := func(m int) time.Time { // a random second of month m
		span := months[m+1].Sub(months[m]) / time.Second
		return months[m].Add(time.Duration(rng.Int64N(int64(span))) * time.Second)
	}
	write := func(m, n int) {
		var evs []ev
		for range n {
			u := decimal.New(rng.Int64N(400), -2)
			evs = append(evs, get(at(m), u.String()))
			wantCalls++
			wantUnits = wantUnits.Add(u)
		}
		f.events(sub, evs...)
	}
	versions := []uuid.UUID{f.v1, f.v2}
	for m := range 3 {
		// Plan changes at random seconds of the month, in order.
		changes := []time.Time{at(m), at(m)}
		if changes[1].Before(changes[0]) {
			changes[0], changes[1] = changes[1], changes[0]
		}
		for i, c := range changes {
			f.changePlan(sub, versions[(m+i+1)%2], c)
		}
		write(m, 20+rng.IntN(20))
		if m > 0 {
			write(m-1, 1+rng.IntN(5)) // late for the month invoiced before
		}
		clock.Set(months[m+1].Add(2 * time.Hour))
		if _, err := svc.RunCycle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]decimal.Decimal{}
	rows, err := f.pool.Query(ctx, `SELECT l.meter_slug, sum(l.quantity) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
		WHERE i.subscription_id = $1 AND i.status = 'open' AND l.kind IN ('usage', 'adjustment') GROUP BY 1`, sub)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var meter *string
		var q decimal.Decimal
		if err := rows.Scan(&meter, &q); err != nil {
			t.Fatal(err)
		}
		if meter != nil {
			got[*meter] = q
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n := f.count(`SELECT count(*) FROM invoices WHERE subscription_id = $1 AND status = 'open'`, sub); n != 3 {
		t.Fatalf("open invoices = %d; want 3", n)
	}
	// The late events were billed as adjustments, none is left pending.
	if n := f.count(`SELECT count(*) FROM billing_adjustments WHERE subscription_id = $1 AND kind = 'late_usage' AND invoice_id IS NOT NULL`, sub); n == 0 {
		t.Fatal("no late usage billed; the test wants some")
	}
	if n := f.count(`SELECT count(*) FROM billing_adjustments WHERE subscription_id = $1 AND invoice_id IS NULL`, sub); n != 0 {
		t.Fatalf("pending adjustments = %d; want 0", n)
	}
	if !got["calls"].Equal(decimal.NewFromInt(int64(wantCalls))) || !got["units"].Equal(wantUnits) {
		t.Fatalf("invoiced calls %s, units %s; want %d, %s (every event written)", got["calls"], got["units"], wantCalls, wantUnits)
	}
	differ, err := svc.ExplainAll(ctx)
	if err != nil || len(differ) > 0 {
		t.Fatalf("ExplainAll = %d differing, %v", len(differ), err)
	}
}
