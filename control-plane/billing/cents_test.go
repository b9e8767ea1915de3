package billing

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// Two months of a hybrid subscription through the billing cycle, with
// ClickHouse: March on v1 (base 10; calls 0.01, units 0.5) until a change
// to v2 (base 30; calls 0.005, units 0.4 after 5 included, gets 0.001) at
// the start of Mar 16, a 10% promotion for two periods, then April on v2,
// a late March event found after March was invoiced and a provider's
// correction of March's calls. Both invoices match, to the cent, what is
// computed here with exact decimals from the events written and the rules
// metering/invoice.go documents, without the rating engine.
//
// The figures are chosen so that the rules show: a 10% discount taken off
// each line would give 28.95 and 30.73 rather than the single line, rounded
// once, of 28.96 and 30.72; and v2's included units restarting at the
// change, rather than going on from v1's usage, would give 27.16.
func TestTwoInvoicesToTheCent(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	ctx := t.Context()
	clock := testenv.NewClock(day(2026, 4, 1).Add(time.Hour))
	svc, err := New(Config{Pool: f.pool, ClickHouse: f.ch, Logger: testenv.Logger(t), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	// v2 is used by no subscription yet, so its charge may still change.
	f.exec(`UPDATE plan_version_charges SET included_units = 5 WHERE plan_version_id = $1
		AND meter_id = (SELECT id FROM meters WHERE api_id = $2 AND slug = 'units')`, f.v2, f.api)
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

	// March: 5 calls of 1.5 units on v1, 10 calls of 2 units on v2.
	var evs []ev
	for i := range 5 {
		evs = append(evs, get(mar.Add(time.Duration(i+1)*time.Hour), "1.5"))
	}
	for i := range 10 {
		evs = append(evs, get(change.Add(time.Duration(i+1)*time.Hour), "2"))
	}
	f.events(sub, evs...)
	if _, err := svc.RunCycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Base 10; on the 16 days of 31 left at the change, -10 and +30 times
	// 16/31. v1's 5 calls and 7.5 units. v2's 10 calls, 10 gets, and its
	// 20 units priced on top of the 7.5 before them: rate(27.5) − rate(7.5)
	// = 22.5×0.4 − 2.5×0.4, none left of the 5 included.
	v1Units := decimal.RequireFromString("7.5")
	march := expectedInvoice{
		lines: []decimal.Decimal{
			dec("10"), dec("-10").Mul(dec("16")).Div(dec("31")), dec("30").Mul(dec("16")).Div(dec("31")),
			dec("5").Mul(dec("0.01")), v1Units.Mul(dec("0.5")),
			dec("10").Mul(dec("0.005")),
			perUnitAfter(v1Units.Add(dec("20")), dec("5"), dec("0.4")).Sub(perUnitAfter(v1Units, dec("5"), dec("0.4"))),
			dec("10").Mul(dec("0.001")),
		},
		percentOff: dec("10"),
	}
	first := f.invoiceOf(t, svc, sub, mar)
	if first.Status != StatusOpen {
		t.Fatalf("March invoice is %s; want open", first.Status)
	}
	march.check(t, "March", first, "3.22", "28.96")

	// A late March event (v2's segment), a correction of 100 calls.
	f.events(sub, get(day(2026, 3, 20), "3"))
	clock.Set(day(2026, 4, 20))
	if _, err := svc.CreateAdjustment(ctx, identity.Actor{Subject: "prov", Role: identity.RoleProvider, OrgID: issuer}, sub,
		AdjustmentInput{BillingPeriodID: first.BillingPeriodID, Meter: new("calls"), Quantity: new(dec("100")), Reason: "uncounted batch"}); err != nil {
		t.Fatal(err)
	}
	// April: 7 calls of 1.5 units on v2.
	evs = evs[:0]
	for i := range 7 {
		evs = append(evs, get(apr.Add(time.Duration(i+1)*time.Hour), "1.5"))
	}
	f.events(sub, evs...)
	clock.Set(may.Add(time.Hour))
	if _, err := svc.RunCycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Discounted: base 30 and April's usage (10.5 units, 5 of them
	// included). Not discounted, after the discount: the correction (100
	// calls at 0.005) and the late event (a call, 3 units past March's
	// included ones, a get) priced by v2 on top of what March billed of
	// each meter: a quantity q on top of b is rate(b + q) − rate(b), each
	// rate rounded, and the late call comes after March's 15 calls (v1's
	// 5 count, as they did under v2 on the invoice): 0.08 − 0.08.
	lateCall := dec("16").Mul(dec("0.005")).Round(2).Sub(dec("15").Mul(dec("0.005")).Round(2))
	april := expectedInvoice{
		lines: []decimal.Decimal{
			dec("30"), dec("7").Mul(dec("0.005")), perUnitAfter(dec("10.5"), dec("5"), dec("0.4")), dec("7").Mul(dec("0.001")),
		},
		percentOff:  dec("10"),
		adjustments: []decimal.Decimal{dec("100").Mul(dec("0.005")), lateCall, dec("3").Mul(dec("0.4")), dec("0.001")},
	}
	second := f.invoiceOf(t, svc, sub, apr)
	april.check(t, "April", second, "3.23", "30.72")
	t.Logf("March %s (%s), April %s (%s)", first.Total, *first.Number, second.Total, *second.Number)
	for _, id := range []uuid.UUID{first.ID, second.ID} {
		explainZero(t, svc, id)
	}
}

// perUnitAfter is what q units cost at price each once included are free.
func perUnitAfter(q, included, price decimal.Decimal) decimal.Decimal {
	return decimal.Max(decimal.Zero, q.Sub(included)).Mul(price)
}

// expectedInvoice is an invoice as metering/invoice.go documents it: fee
// and usage lines, each rounded once to the cent half away from zero; one
// discount line of percentOff of their sum, rounded once; then the
// adjustments, each rounded, not discounted.
type expectedInvoice struct {
	lines, adjustments []decimal.Decimal
	percentOff         decimal.Decimal
}

func (e expectedInvoice) discount() decimal.Decimal {
	sum := decimal.Zero
	for _, l := range e.lines {
		sum = sum.Add(l.Round(2))
	}
	return decimal.Max(decimal.Zero, sum.Mul(e.percentOff).Shift(-2).Round(2))
}

func (e expectedInvoice) total() decimal.Decimal {
	total := e.discount().Neg()
	for _, l := range append(slices.Clone(e.lines), e.adjustments...) {
		total = total.Add(l.Round(2))
	}
	return total
}

// check compares inv's discount and total with e's, and e's with the
// figures worked out by hand, so that neither side can drift alone.
func (e expectedInvoice) check(t *testing.T, name string, inv Invoice, discount, total string) {
	t.Helper()
	if got := e.discount().StringFixed(2); got != discount {
		t.Fatalf("%s: expected discount computes to %s; by hand %s", name, got, discount)
	}
	if got := e.total().StringFixed(2); got != total {
		t.Fatalf("%s: expected total computes to %s; by hand %s", name, got, total)
	}
	if inv.Discount.StringFixed(2) != discount || inv.Total.StringFixed(2) != total {
		t.Fatalf("%s invoice: discount %s, total %s; want %s, %s\n%+v", name, inv.Discount.StringFixed(2), inv.Total.StringFixed(2),
			discount, total, inv.Lines)
	}
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
	t.Parallel()
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
