package billing

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
)

// unreadable gives a period's snapshot a line of a segment its pricing
// history does not have, so that its segments cannot be read, and
// returns what takes the line away again.
func (f *invoiceFixture) unreadable(period uuid.UUID) func() {
	f.t.Helper()
	f.exec(`INSERT INTO usage_snapshot_lines (snapshot_id, plan_version_id, segment_start, segment_end, meter_slug, quantity)
		SELECT u.id, $2, p.period_start + interval '1 day', p.period_end, 'bogus', 1
		FROM usage_snapshots u JOIN billing_periods p ON p.id = u.billing_period_id WHERE p.id = $1`, period, f.version)
	return func() {
		f.exec(`DELETE FROM usage_snapshot_lines WHERE meter_slug = 'bogus' AND snapshot_id =
			(SELECT id FROM usage_snapshots WHERE billing_period_id = $1)`, period)
	}
}

// frontPeriods makes n closed periods that end a day before the others,
// so that they are listed first, with segments that cannot be read.
func (f *invoiceFixture) frontPeriods(n int) (periods []uuid.UUID, repair func()) {
	f.t.Helper()
	var repairs []func()
	for range n {
		_, sub := f.closedPeriod()
		var p uuid.UUID
		f.scan(&p, `UPDATE billing_periods SET period_end = period_end - interval '1 day' WHERE subscription_id = $1 RETURNING id`, sub)
		periods = append(periods, p)
		repairs = append(repairs, f.unreadable(p))
	}
	return periods, func() {
		for _, r := range repairs {
			r()
		}
	}
}

// A batch of periods the cycle cannot invoice does not stop it: the
// batches after it are invoiced, and each failure is returned with its
// period, run after run.
func TestCycleGoesOnPastABatchItCannotInvoice(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	bad, repair := f.frontPeriods(4)
	for range 3 {
		f.closedPeriod()
	}
	for run, want := range []int{3, 0} {
		n, err := f.svc.buildSets(f.ctx, true, 4)
		if n != want || err == nil {
			t.Fatalf("run %d: %d invoiced, error %v; want %d and the failures", run, n, err, want)
		}
		for _, p := range bad {
			if !strings.Contains(err.Error(), p.String()) {
				t.Errorf("run %d: the error does not name period %s: %v", run, p, err)
			}
		}
	}
	repair()
	if n, err := f.svc.buildSets(f.ctx, true, 4); n != 4 || err != nil {
		t.Fatalf("once repaired: %d invoiced, %v; want 4", n, err)
	}
}

// The same for drafts to finalize: drafts that cannot be finalized,
// listed first, do not hold up the others.
func TestFinalizeGoesOnPastABatchItCannotFinalize(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	var bad []uuid.UUID
	for range 4 {
		_, sub := f.closedPeriod()
		var p uuid.UUID
		f.scan(&p, `UPDATE billing_periods SET period_end = period_end - interval '1 day' WHERE subscription_id = $1 RETURNING id`, sub)
		bad = append(bad, p)
	}
	for range 3 {
		f.closedPeriod()
	}
	if n, err := f.svc.buildSets(f.ctx, false, 4); n != 7 || err != nil {
		t.Fatalf("drafts built: %d, %v; want 7", n, err)
	}
	var repairs []func()
	for _, p := range bad {
		repairs = append(repairs, f.unreadable(p))
	}
	f.clock.Set(f.clock.Now().Add(time.Hour))
	n, err := f.svc.finalizeSets(f.ctx, 4)
	if n != 3 || err == nil {
		t.Fatalf("%d finalized, error %v; want 3 and the failures", n, err)
	}
	for _, p := range bad {
		if !strings.Contains(err.Error(), p.String()) {
			t.Errorf("the error does not name period %s: %v", p, err)
		}
	}
	for _, r := range repairs {
		r()
	}
	if n, err := f.svc.finalizeSets(f.ctx, 4); n != 4 || err != nil {
		t.Fatalf("once repaired: %d finalized, %v; want 4", n, err)
	}
}

// preparedDrafts builds the drafts of the n closed periods and reads
// them as the cycle's finalization does, to be written later.
func (f *invoiceFixture) preparedDrafts(n int) ([]cycleJob, prepared) {
	f.t.Helper()
	if built, err := f.svc.buildAllSets(f.ctx, false); err != nil || built != n {
		f.t.Fatalf("build = %d, %v; want %d", built, err, n)
	}
	rows, err := db.New(f.pool).DraftsToFinalizeWith(f.ctx, db.DraftsToFinalizeWithParams{BuiltBefore: f.clock.Now().Add(time.Hour), Max: cycleBatch})
	if err != nil {
		f.t.Fatal(err)
	}
	var jobs []cycleJob
	for _, r := range rows {
		jobs = append(jobs, cycleJob{invoice: r.InvoiceID, period: *r.BillingPeriodID, sub: r.SubscriptionID, issuer: r.IssuerID,
			customer: r.CustomerID, start: r.PeriodStart, end: r.PeriodEnd})
	}
	items, slow, err := f.svc.prepareSet(f.ctx, jobs, true)
	if err != nil || len(items) != n {
		f.t.Fatalf("prepareSet = %d items, %v; want %d", len(items), err, n)
	}
	return jobs, prepared{items: items, slow: slow}
}

// checkNumbers checks that the issuer's invoices are all open, numbered 1
// to n without a gap.
func (f *invoiceFixture) checkNumbers(n int) {
	f.t.Helper()
	var open, distinct, maxNumber int
	f.scan(&open, `SELECT count(*) FROM invoices WHERE status = 'open' AND issuer_id = $1`, f.issuer)
	f.scan(&distinct, `SELECT count(DISTINCT number) FROM invoices WHERE issuer_id = $1`, f.issuer)
	f.scan(&maxNumber, `SELECT max(right(number, 6)::int) FROM invoices WHERE issuer_id = $1`, f.issuer)
	if open != n || distinct != n || maxNumber != n {
		f.t.Fatalf("%d open invoices, %d numbers up to %d; want %d numbered 1 to %d", open, distinct, maxNumber, n, n)
	}
}

// A draft of a set finalized through the API before the set is written
// leaves the set: the others are finalized in it, none is dropped, and
// the numbers stay gapless.
func TestSetWrittenWithoutADraftFinalizedMeanwhile(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	for range 5 {
		f.closedPeriod()
	}
	jobs, p := f.preparedDrafts(5)
	if _, err := f.svc.Finalize(f.ctx, f.provider, jobs[len(jobs)-1].invoice); err != nil {
		t.Fatal(err)
	}
	n, err := f.svc.writeSet(f.ctx, p, true)
	if n != 4 || err != nil {
		t.Fatalf("writeSet = %d, %v; want the 4 others finalized", n, err)
	}
	f.checkNumbers(5)
	var txs int
	f.scan(&txs, `SELECT count(DISTINCT xmin::text) FROM invoices WHERE id <> $1`, jobs[len(jobs)-1].invoice)
	if txs != 1 {
		t.Errorf("the 4 others were finalized by %d transactions; want one, the set's", txs)
	}
}

// A promotion of once that another invoice applied after the set was
// read is not applied again: the set's count of it is conditional, and
// the invoice leaves the set for the single path, which sees it spent.
func TestSetDoesNotApplyAPromotionSpentMeanwhile(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	var promo uuid.UUID
	f.scan(&promo, `INSERT INTO promotions (organization_id, code, kind, value, duration, valid_from, created_by)
		VALUES ($1, 'ONCE', 'percent_off', 10, 'once', $2, 'prov') RETURNING id`, f.issuer, periodStart.AddDate(0, -1, 0))
	_, sub := f.closedPeriod()
	var redemption uuid.UUID
	f.scan(&redemption, `INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
		SELECT $1, id, organization_id, 'cust', $3 FROM subscriptions WHERE id = $2 RETURNING id`, promo, sub, periodStart)
	for range 3 {
		f.closedPeriod()
	}
	_, p := f.preparedDrafts(4)
	f.exec(`UPDATE promotion_redemptions SET periods_applied = 1 WHERE id = $1`, redemption)
	n, err := f.svc.writeSet(f.ctx, p, true)
	if n != 4 || err != nil {
		t.Fatalf("writeSet = %d, %v; want 4 finalized", n, err)
	}
	f.checkNumbers(4)
	var applied, discounts int
	f.scan(&applied, `SELECT periods_applied FROM promotion_redemptions WHERE id = $1`, redemption)
	f.scan(&discounts, `SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE i.issuer_id = $1 AND l.kind = 'discount'`, f.issuer)
	if applied != 1 || discounts != 0 {
		t.Fatalf("periods applied %d, %d discount lines; want 1 and none", applied, discounts)
	}
}

// A pending quantity adjustment whose period's segments cannot be read
// holds up its subscription's next invoice, with an error, rather than
// being left out of it; once they can be read, the invoice bills it.
func TestSetFailsOnAnAdjustmentItCannotPrice(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	var meter, charge uuid.UUID
	f.scan(&meter, `INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	f.scan(&charge, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model) VALUES ($1, $2, 'graduated') RETURNING id`, f.version, meter)
	f.exec(`INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, 1, NULL, 0.01)`, charge)
	_, sub := f.closedPeriod()
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	var first uuid.UUID
	f.scan(&first, `SELECT id FROM billing_periods WHERE subscription_id = $1`, sub)
	f.exec(`INSERT INTO billing_adjustments (subscription_id, billing_period_id, kind, meter_slug, quantity, reason, actor)
		VALUES ($1, $2, 'correction', 'calls', 5, 'missed', 'prov')`, sub, first)
	end := periodStart.AddDate(0, 1, 0)
	second := f.period(sub, end, end.AddDate(0, 1, 0), false)
	repair := f.unreadable(first)
	f.clock.Set(end.AddDate(0, 1, 1))
	_, err := f.svc.RunCycle(f.ctx)
	if err == nil || !strings.Contains(err.Error(), first.String()) {
		t.Fatalf("RunCycle = %v; want the error of period %s's segments", err, first)
	}
	var invoiced int
	f.scan(&invoiced, `SELECT count(*) FROM invoices WHERE billing_period_id = $1`, second)
	if invoiced != 0 {
		t.Fatal("the second period is invoiced without its pending adjustment")
	}
	repair()
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	var billed int
	f.scan(&billed, `SELECT count(*) FROM invoice_lines WHERE invoice_id = $1 AND kind = 'adjustment' AND amount = 0.05`, f.invoiceOfPeriod(second))
	if billed != 1 {
		t.Fatalf("%d adjustment lines of 0.05 on the second invoice; want one", billed)
	}
}

// Late usage of a period's earlier segment comes after everything the
// period's invoice priced, the later segments' usage included, and after
// the adjustments billed before, whatever segment they concern: over the
// invoices, the period's usage costs the rate of all of it. Two segments
// of versions pricing calls alike (100 at 0.02, then 0.01), 60 and 30
// calls invoiced (1.80); then 30 late calls of the first segment and 40
// of the second on the next invoice (0.80: rate(160) − rate(90)), then 10
// of the first on the one after (0.10: rate(170) − rate(160)).
func TestLateUsageOfAnEarlierSegmentKeepsThePeriodsRate(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	mid := periodStart.AddDate(0, 0, 15)
	end := periodStart.AddDate(0, 1, 0)
	var meter, plan, v2 uuid.UUID
	f.scan(&meter, `INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	f.scan(&plan, `SELECT plan_id FROM plan_versions WHERE id = $1`, f.version)
	f.scan(&v2, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
		VALUES ($1, 2, 'subscription', 'EUR', 10, 30, 'prov') RETURNING id`, plan)
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
	late := func(version uuid.UUID, from time.Time, calls int) {
		f.exec(`INSERT INTO billing_adjustments (subscription_id, billing_period_id, kind, meter_slug, quantity, reason, actor, plan_version_id, segment_start)
			VALUES ($1, $2, 'late_usage', 'calls', $5, 'late', 'system', $3, $4)`, sub, first, version, from, calls)
	}
	adjustments := func(period uuid.UUID) string {
		inv, err := f.svc.Invoice(f.ctx, f.provider, f.invoiceOfPeriod(period))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range inv.Lines {
			if l.Kind == "adjustment" {
				out = append(out, l.Amount.StringFixed(2))
			}
		}
		explainZero(t, f.svc, inv.ID)
		return strings.Join(out, " ")
	}
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	late(f.version, periodStart, 30)
	late(v2, mid, 40)
	second := f.period(sub, end, end.AddDate(0, 1, 0), false)
	f.clock.Set(end.AddDate(0, 1, 1))
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	if got := adjustments(second); got != "0.40 0.40" {
		t.Fatalf("late usage lines = %q; want 0.40 0.40 (calls 91 to 120 and 121 to 160)", got)
	}
	late(f.version, periodStart, 10)
	third := f.period(sub, end.AddDate(0, 1, 0), end.AddDate(0, 2, 0), false)
	f.clock.Set(end.AddDate(0, 2, 1))
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	if got := adjustments(third); got != "0.10" {
		t.Fatalf("late usage line = %q; want 0.10 (calls 161 to 170)", got)
	}
	var usage string
	f.scan(&usage, `SELECT sum(l.amount)::numeric(20, 2)::text FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
		WHERE i.subscription_id = $1 AND l.kind IN ('usage', 'adjustment')`, sub)
	if usage != "2.70" {
		t.Fatalf("the period's usage billed %s over three invoices; want 2.70, the rate of its 170 calls", usage)
	}
}

// An issuer's set that fails does not hold up its later sets: with sets of
// two, the first period's invoice leaves its set (its promotion applied
// meanwhile) and fails one by one (its segments cannot be read any more);
// the rest of its set and the two sets after it are finalized.
func TestIssuersLaterSetsGoOnPastOneThatFails(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	bad, repair := f.frontPeriods(1)
	repair()
	for range 4 {
		f.closedPeriod()
	}
	var promo uuid.UUID
	f.scan(&promo, `INSERT INTO promotions (organization_id, code, kind, value, duration, valid_from, created_by)
		VALUES ($1, 'ONCE', 'percent_off', 10, 'once', $2, 'prov') RETURNING id`, f.issuer, periodStart.AddDate(0, -1, 0))
	var redemption uuid.UUID
	f.scan(&redemption, `INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
		SELECT $1, subscription_id, (SELECT organization_id FROM subscriptions s WHERE s.id = subscription_id), 'cust', $3
		FROM billing_periods WHERE id = $2 RETURNING id`, promo, bad[0], periodStart)
	_, p := f.preparedDrafts(5)
	p.chunk = 2
	f.exec(`UPDATE promotion_redemptions SET periods_applied = 1 WHERE id = $1`, redemption)
	repair = f.unreadable(bad[0])
	n, err := f.svc.writeSet(f.ctx, p, true)
	if n != 4 || err == nil || !strings.Contains(err.Error(), bad[0].String()) {
		t.Fatalf("writeSet = %d, %v; want the 4 others finalized and the error of period %s", n, err, bad[0])
	}
	repair()
}

// A draft that cannot be recomputed does not hold up the drafts listed
// after it: they follow a credit granted meanwhile.
func TestRecomputeGoesOnPastADraftItCannotRecompute(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	bad, repair := f.frontPeriods(1)
	repair()
	customer, _ := f.closedPeriod()
	if n, err := f.svc.buildAllSets(f.ctx, false); n != 2 || err != nil {
		t.Fatalf("drafts built: %d, %v; want 2", n, err)
	}
	if _, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("4"), Reason: "goodwill"}); err != nil {
		t.Fatal(err)
	}
	repair = f.unreadable(bad[0])
	n, err := f.svc.RecomputeDrafts(f.ctx, 10)
	if n != 1 || err == nil || !strings.Contains(err.Error(), bad[0].String()) {
		t.Fatalf("RecomputeDrafts = %d, %v; want the other draft recomputed and the error of period %s", n, err, bad[0])
	}
	var credited int
	f.scan(&credited, `SELECT count(*) FROM invoices WHERE customer_id = $1 AND credit_applied = 4`, customer)
	if credited != 1 {
		t.Fatal("the draft after the one that failed does not show the credit granted")
	}
	repair()
}
