package billing

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/testenv"
)

// The cycle finalizes an issuer's invoices together, in one transaction:
// numbered in period order without a gap, a customer's credit used
// invoice after invoice (its ledger following the balance), a promotion
// counted once, a pending adjustment billed, each invoice announced and
// audited.
func TestCycleFinalizesAnIssuersInvoicesTogether(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	const n = 12
	var subs []uuid.UUID
	for range n - 1 {
		_, sub := f.closedPeriod()
		subs = append(subs, sub)
	}
	// The customer of the first subscription holds a second one, of
	// another API of the issuer, and 15.00 of credit: 10.00 pays the
	// first invoice, 5.00 the second.
	var customer uuid.UUID
	f.scan(&customer, `SELECT organization_id FROM subscriptions WHERE id = $1`, subs[0])
	subs = append(subs, f.secondSubscription(customer))
	if _, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("15"), Reason: "goodwill"}); err != nil {
		t.Fatal(err)
	}
	var promo, redemption uuid.UUID
	f.scan(&promo, `INSERT INTO promotions (organization_id, code, kind, value, duration, valid_from, created_by)
		VALUES ($1, 'TENOFF', 'percent_off', 10, 'forever', $2, 'prov') RETURNING id`, f.issuer, periodStart.AddDate(0, -1, 0))
	f.scan(&redemption, `INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
		SELECT $1, id, organization_id, 'cust', $3 FROM subscriptions WHERE id = $2 RETURNING id`, promo, subs[3], periodStart)

	// A correction of 2.50 waits for the next invoice of subs[5].
	var adjustment uuid.UUID
	f.scan(&adjustment, `INSERT INTO billing_adjustments (subscription_id, kind, amount, currency, reason, actor)
		VALUES ($1, 'correction', 2.5, 'EUR', 'missed', 'prov') RETURNING id`, subs[5])

	rep, err := f.svc.RunCycle(f.ctx)
	if err != nil || rep.Drafts != n {
		t.Fatalf("RunCycle = %+v, %v; want %d invoices", rep, err, n)
	}
	var open, txs int
	f.scan(&open, `SELECT count(*) FROM invoices WHERE status = 'open'`)
	f.scan(&txs, `SELECT count(DISTINCT xmin::text) FROM invoices`)
	if open != n || txs != 1 {
		t.Fatalf("%d open invoices written by %d transactions; want %d by one", open, txs, n)
	}
	rows, err := f.pool.Query(f.ctx, `SELECT number FROM invoices ORDER BY period_end, billing_period_id`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; rows.Next(); i++ {
		var number string
		if err := rows.Scan(&number); err != nil {
			t.Fatal(err)
		}
		if want := InvoiceNumber("INV", f.clock.Now().Year(), int64(i)); number != want {
			t.Errorf("invoice %d of the period order is %s; want %s", i, number, want)
		}
	}
	rows.Close()

	ledger, err := f.svc.CreditLedger(f.ctx, f.provider, f.issuer, customer, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, e := range ledger {
		got += fmt.Sprintf("%s %s→%s; ", e.Kind, e.Amount.StringFixed(2), e.BalanceAfter.StringFixed(2))
	}
	if want := "goodwill 15.00→15.00; applied -10.00→5.00; applied -5.00→0.00; "; got != want {
		t.Errorf("credit ledger = %q; want %q", got, want)
	}
	var applied int
	f.scan(&applied, `SELECT periods_applied FROM promotion_redemptions WHERE id = $1`, redemption)
	var discounted int
	f.scan(&discounted, `SELECT count(*) FROM invoice_lines WHERE kind = 'discount' AND amount = -1`)
	if applied != 1 || discounted != 1 {
		t.Errorf("promotion applied %d times, %d discount lines of -1.00; want once and one", applied, discounted)
	}
	var corrected int
	f.scan(&corrected, `SELECT count(*) FROM billing_adjustments a JOIN invoices i ON i.id = a.invoice_id
		WHERE a.id = $1 AND i.subscription_id = $2 AND i.total = 12.5`, adjustment, subs[5])
	if corrected != 1 {
		t.Errorf("the correction is billed on %d invoices of 12.50 of its subscription; want one", corrected)
	}
	var audited int
	f.scan(&audited, `SELECT count(*) FROM audit_log WHERE action = 'invoice.finalize' AND organization_id = $1`, f.issuer)
	f.hooks.mu.Lock()
	announced := len(f.hooks.events)
	f.hooks.mu.Unlock()
	if audited != n || announced != 2*n {
		t.Errorf("%d audited, %d events; want %d and %d (to the issuer and the customer)", audited, announced, n, 2*n)
	}
}

// secondSubscription subscribes customer to a second API of the issuer
// (one live subscription per API), with a closed first period as
// closedPeriod's.
func (f *invoiceFixture) secondSubscription(customer uuid.UUID) uuid.UUID {
	f.t.Helper()
	slug := "api2-" + testenv.Suffix()
	var api, plan, version, sub uuid.UUID
	f.scan(&api, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, $2, $2, 'https://upstream.example', 'v1', 'prov') RETURNING id`, f.issuer, slug)
	f.scan(&plan, `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'Pro', 'pro') RETURNING id`, api)
	f.scan(&version, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 10, 30, 'prov') RETURNING id`, plan)
	end := periodStart.AddDate(0, 1, 0)
	f.scan(&sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, $4, $5) RETURNING id`, customer, api, version, end, end.AddDate(0, 1, 0))
	f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'active', $3, 'cust')`, sub, version, periodStart)
	f.period(sub, periodStart, end, false)
	return sub
}

// Late usage of a period's second segment is priced on top of all the
// period used of its meter, the first segment's usage included, as the
// invoice priced the second segment's own usage: the tiers go on and
// nothing is priced at the first tier twice.
func TestLateUsageOfALaterSegmentContinuesThePeriodsTiers(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	mid := periodStart.AddDate(0, 0, 15)
	end := periodStart.AddDate(0, 1, 0)
	var meter, plan, v2 uuid.UUID
	f.scan(&meter, `INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	f.scan(&plan, `SELECT plan_id FROM plan_versions WHERE id = $1`, f.version)
	f.scan(&v2, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
		VALUES ($1, 2, 'subscription', 'EUR', 10, 30, 'prov') RETURNING id`, plan)
	// Both versions: the first 100 calls of a period at 0.02, the rest at
	// 0.01.
	for _, v := range []uuid.UUID{f.version, v2} {
		var charge uuid.UUID
		f.scan(&charge, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model) VALUES ($1, $2, 'graduated') RETURNING id`, v, meter)
		f.exec(`INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, 1, 100, 0.02), ($1, 2, NULL, 0.01)`, charge)
	}
	_, sub := f.closedPeriod()
	f.exec(`UPDATE subscriptions SET plan_version_id = $2 WHERE id = $1`, sub, v2)
	f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'active', $3, 'cust')`, sub, v2, mid)
	var first uuid.UUID
	f.scan(&first, `SELECT id FROM billing_periods WHERE subscription_id = $1`, sub)
	for _, l := range []struct {
		version  uuid.UUID
		from, to time.Time
		calls    int
	}{{f.version, periodStart, mid, 60}, {v2, mid, end, 30}} {
		f.exec(`INSERT INTO usage_snapshot_lines (snapshot_id, plan_version_id, segment_start, segment_end, meter_slug, quantity)
			SELECT id, $2, $3, $4, 'calls', $5 FROM usage_snapshots WHERE billing_period_id = $1`, first, l.version, l.from, l.to, l.calls)
	}
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	inv, err := f.svc.Invoice(f.ctx, f.provider, f.invoiceOfPeriod(first))
	if err != nil {
		t.Fatal(err)
	}
	// 10.00 of fee (the proration pair cancels out), 60 × 0.02 and 30 ×
	// 0.02 of usage.
	if !inv.Total.Equal(dec("11.80")) {
		t.Fatalf("first invoice total = %s; want 11.80", inv.Total)
	}
	// 40 late calls of the second segment: calls 91 to 130 of the period,
	// 10 at 0.02 and 30 at 0.01.
	f.exec(`INSERT INTO billing_adjustments (subscription_id, billing_period_id, kind, meter_slug, quantity, reason, actor, plan_version_id, segment_start)
		VALUES ($1, $2, 'late_usage', 'calls', 40, 'late', 'system', $3, $4)`, sub, first, v2, mid)
	second := f.period(sub, end, end.AddDate(0, 1, 0), false)
	f.clock.Set(end.AddDate(0, 1, 1))
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	next, err := f.svc.Invoice(f.ctx, f.provider, f.invoiceOfPeriod(second))
	if err != nil {
		t.Fatal(err)
	}
	var adj *Line
	for i, l := range next.Lines {
		if l.Kind == "adjustment" {
			adj = &next.Lines[i]
		}
	}
	if adj == nil || !adj.Amount.Equal(dec("0.50")) {
		t.Fatalf("late usage line = %+v; want 0.50 (rate(130) - rate(90))", adj)
	}
	explainZero(t, f.svc, next.ID)
}

// With a review, the cycle builds drafts by sets and, once the review
// time has passed, finalizes them by sets: recomputed with the credit as
// it is then, their lines replaced, not added to.
func TestCycleFinalizesReviewedDraftsTogether(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	svc, err := New(Config{Pool: f.pool, Logger: testenv.Logger(t), Now: f.clock.Now, Publisher: f.hooks, Review: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	var customer uuid.UUID
	for i := range n {
		c, _ := f.closedPeriod()
		if i == 0 {
			customer = c
		}
	}
	if rep, err := svc.RunCycle(f.ctx); err != nil || rep.Drafts != n || rep.Finalized != 0 {
		t.Fatalf("RunCycle = %+v, %v; want %d drafts, none finalized", rep, err, n)
	}
	var drafts, lines int
	f.scan(&drafts, `SELECT count(*) FROM invoices WHERE status = 'draft' AND total = 10`)
	f.scan(&lines, `SELECT count(*) FROM invoice_lines`)
	if drafts != n || lines != n {
		t.Fatalf("%d drafts of 10.00 with %d lines; want %d with one each", drafts, lines, n)
	}
	if _, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("4"), Reason: "goodwill"}); err != nil {
		t.Fatal(err)
	}
	f.clock.Set(f.clock.Now().Add(2 * time.Hour))
	if rep, err := svc.RunCycle(f.ctx); err != nil || rep.Finalized != n {
		t.Fatalf("RunCycle after the review = %+v, %v; want %d finalized", rep, err, n)
	}
	var open, txs, due int
	f.scan(&open, `SELECT count(*) FROM invoices WHERE status = 'open'`)
	f.scan(&txs, `SELECT count(DISTINCT xmin::text) FROM invoices`)
	f.scan(&lines, `SELECT count(*) FROM invoice_lines`)
	f.scan(&due, `SELECT count(*) FROM invoices WHERE amount_due = 6 AND credit_applied = 4 AND customer_id = $1`, customer)
	if open != n || txs != 1 || lines != n+1 || due != 1 {
		t.Fatalf("%d open by %d transactions, %d lines, %d invoices paid 4.00 by credit; want %d by one, %d lines (a credit line), 1",
			open, txs, lines, due, n, n+1)
	}
}
