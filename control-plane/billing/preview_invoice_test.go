package billing

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
)

// The preview is the invoice of the same usage: a period with a plan
// change in its middle, tiers that run on across the change, included
// units, a route meter, a forever promotion, an amount off in another
// currency (neither applies it), a pending correction, a credit balance
// and sales tax, usage in ClickHouse up to a second before the period's
// end (with refusals and upstream failures, which bill nothing). The
// preview taken then and the invoice the billing cycle makes once the
// period has ended and closed agree line by line (kind, meter, tier,
// quantity, unit price, amount, plan version, reference) and in every
// total, exactly; the outlook's cost so far is the preview's total.
func TestPreviewEqualsInvoiceOfThePeriod(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	start, end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	change := time.Date(2026, 11, 11, 13, 30, 0, 0, time.UTC)
	// v1 includes 2 units; v2's calls are tiered: 0.02 up to the
	// period's 5th call, 0.003 beyond.
	f.exec(`UPDATE plan_version_charges SET included_units = 2 WHERE plan_version_id = $1
		AND meter_id = (SELECT id FROM meters WHERE api_id = $2 AND slug = 'units')`, f.v1, f.api)
	var calls uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `UPDATE plan_version_charges SET model = 'graduated', unit_price = NULL
		WHERE plan_version_id = $1 AND meter_id = (SELECT id FROM meters WHERE api_id = $2 AND slug = 'calls') RETURNING id`,
		f.v2, f.api).Scan(&calls); err != nil {
		t.Fatal(err)
	}
	f.exec(`INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, 1, 5, 0.02), ($1, 2, NULL, 0.003)`, calls)

	sub := f.subscribe(start, start, end, nil)
	f.changePlan(sub, f.v2, change)
	var issuer, customer uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `SELECT s.organization_id, a.organization_id FROM subscriptions s JOIN apis a ON a.id = s.api_id
		WHERE s.id = $1`, sub).Scan(&customer, &issuer); err != nil {
		t.Fatal(err)
	}
	var promo uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `INSERT INTO promotions (organization_id, code, kind, value, duration, valid_from, created_by)
		VALUES ($1, 'LOYAL10', 'percent_off', 10, 'forever', $2, 'prov') RETURNING id`, issuer, start.AddDate(0, -1, 0)).Scan(&promo); err != nil {
		t.Fatal(err)
	}
	f.exec(`INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
		VALUES ($1, $2, $3, 'cons', $4)`, promo, sub, customer, start)
	// 5 EUR off, redeemed under a plan in euros: the dollar invoice
	// leaves it for a euro one, and so must the preview.
	var euros uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `INSERT INTO promotions (organization_id, code, kind, value, currency, duration, valid_from, created_by)
		VALUES ($1, 'EURO5', 'amount_off', 5, 'EUR', 'forever', $2, 'prov') RETURNING id`, issuer, start.AddDate(0, -1, 0)).Scan(&euros); err != nil {
		t.Fatal(err)
	}
	f.exec(`INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
		VALUES ($1, $2, $3, 'cons', $4)`, euros, sub, customer, start)
	f.exec(`INSERT INTO billing_adjustments (subscription_id, kind, amount, currency, reason, actor)
		VALUES ($1, 'correction', 2.5, 'USD', 'missed', 'prov')`, sub)
	f.exec(`INSERT INTO credit_balances (issuer_id, customer_id, currency, balance) VALUES ($1, $2, 'USD', 3.333)`, issuer, customer)
	f.exec(`INSERT INTO billing_profiles (organization_id, legal_name, country, region, email) VALUES ($1, 'Cons Inc', 'US', 'CA', 'ap@cons.example')`, customer)
	f.exec(`INSERT INTO tax_rules (issuer_id, country, name, rate_percent, effective_from, created_by)
		VALUES ($1, 'US', 'Sales tax', 7.25, '2026-01-01', 'prov')`, issuer)

	post := func(at time.Time, units string) ev {
		return ev{at: at, method: "POST", path: "/v2/orders", status: 201, units: units}
	}
	refused, failed := get(start.Add(50*time.Hour), "9"), get(start.Add(51*time.Hour), "9")
	refused.refusal, failed.status = "quota_exhausted", 502
	f.events(sub,
		get(start, "1.25"), post(start.Add(26*time.Hour), "0.5"), get(start.Add(3*24*time.Hour+7*time.Second), "2"),
		refused, failed,
		post(change.Add(-time.Second), "1"), // the last second of v1
		get(change, "0.75"), get(change.Add(time.Hour), "3"), post(change.Add(2*time.Hour), "1.333333"),
		get(end.Add(-10*24*time.Hour), "2"), get(end.Add(-26*time.Hour), "0.1"), post(end.Add(-3*time.Hour), "4"),
		get(end.Add(-2*time.Second), "0.000001"))

	cons := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: customer}
	asOf := end.Add(-time.Second)
	f.svc.now = func() time.Time { return asOf }
	preview, outlook, err := f.svc.PreviewOutlook(t.Context(), cons, sub)
	if err != nil {
		t.Fatalf("PreviewOutlook: %v", err)
	}
	if !outlook.CostSoFar.Equal(preview.Total) || !outlook.AsOf.Equal(asOf) {
		t.Errorf("outlook cost so far %s as of %s; want the preview's total %s as of %s", outlook.CostSoFar, outlook.AsOf, preview.Total, asOf)
	}
	kinds := map[string]int{}
	tiered := false
	for _, l := range preview.Lines {
		kinds[l.Kind]++
		tiered = tiered || l.Tier > 1
	}
	// A preview without these would compare nothing worth comparing.
	if kinds["usage"] < 5 || kinds["discount"] == 0 || kinds["tax"] == 0 || kinds["proration_charge"] == 0 || !tiered ||
		len(preview.Lines) < 9 || !preview.CreditApplied.IsPositive() {
		t.Fatalf("preview lines %+v, credit %s; want usage of both versions, tiers, proration, a discount, the correction, tax and credit",
			preview.Lines, preview.CreditApplied)
	}

	// The period ends: the roll moves the subscription on, and after the
	// grace the billing cycle records, closes, snapshots, builds and
	// finalizes its invoice.
	f.exec(`UPDATE subscriptions SET current_period_start = $2, current_period_end = $3 WHERE id = $1`, sub, end, end.AddDate(0, 1, 0))
	f.svc.now = func() time.Time { return end.Add(f.svc.cfg.Grace + time.Minute) }
	if _, err := f.svc.RunCycle(t.Context()); err != nil {
		t.Fatalf("RunCycle: %v", err)
	}
	var id uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `SELECT i.id FROM invoices i JOIN billing_periods p ON p.id = i.billing_period_id
		WHERE i.subscription_id = $1 AND p.period_start = $2`, sub, start).Scan(&id); err != nil {
		t.Fatalf("the period's invoice: %v", err)
	}
	inv, err := f.svc.Invoice(t.Context(), cons, id)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Status != StatusOpen {
		t.Errorf("invoice %s; want it finalized (open)", inv.Status)
	}
	comparePreviewInvoice(t, preview, inv)
}

func comparePreviewInvoice(t *testing.T, preview, inv Invoice) {
	t.Helper()
	for _, c := range []struct {
		name      string
		got, want string
	}{
		{"subtotal", preview.Subtotal.String(), inv.Subtotal.String()},
		{"discount", preview.Discount.String(), inv.Discount.String()},
		{"tax", preview.Tax.String(), inv.Tax.String()},
		{"total", preview.Total.String(), inv.Total.String()},
		{"credit applied", preview.CreditApplied.String(), inv.CreditApplied.String()},
		{"amount due", preview.AmountDue.String(), inv.AmountDue.String()},
		{"currency", preview.Currency, inv.Currency},
	} {
		if c.got != c.want {
			t.Errorf("%s: preview %s, invoice %s", c.name, c.got, c.want)
		}
	}
	if len(preview.Lines) != len(inv.Lines) {
		t.Fatalf("preview has %d lines, the invoice %d:\npreview %+v\ninvoice %+v", len(preview.Lines), len(inv.Lines), preview.Lines, inv.Lines)
	}
	for i, p := range preview.Lines {
		l := inv.Lines[i]
		same := p.Kind == l.Kind && p.Description == l.Description && p.Tier == l.Tier && p.Quantity.Equal(l.Quantity) &&
			p.UnitPrice.String() == l.UnitPrice.String() && p.Amount.String() == l.Amount.String() &&
			(p.Meter == nil) == (l.Meter == nil) && (p.Meter == nil || *p.Meter == *l.Meter) &&
			(p.PlanVersionID == nil) == (l.PlanVersionID == nil) && (p.PlanVersionID == nil || *p.PlanVersionID == *l.PlanVersionID) &&
			p.Reference == l.Reference
		if !same {
			t.Errorf("line %d: preview %+v, invoice %+v", i+1, p, l)
		}
	}
}
