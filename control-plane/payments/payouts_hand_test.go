package payments

import (
	"testing"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// TestPayoutsPaidByHand: money the issuer's own member marked paid by hand
// never reached the platform, so it is listed apart (paid to the issuer)
// and lowers what the platform owes by the fee the issuer owes on it; the
// same mark by a platform admin counts as collected; both show the
// attempt's provider, manual.
func TestPayoutsPaidByHand(t *testing.T) {
	f := setup(t, "stripe")
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO issuer_settings (organization_id, platform_fee_percent) VALUES ($1, 10)`, f.issuer); err != nil {
		t.Fatal(err)
	}
	month := f.clock.Now().UTC().Format(MonthLayout)
	owed := func() PayoutTotal {
		t.Helper()
		po, err := f.svc.Payouts(f.ctx, f.provider, f.issuer, month)
		if err != nil {
			t.Fatal(err)
		}
		if len(po.Totals) != 1 {
			t.Fatalf("Payouts totals = %+v; want one in EUR", po.Totals)
		}
		return po.Totals[0]
	}
	f.paid("100.00")
	before := owed()
	if !before.Owed.Equal(decimal.RequireFromString("90.00")) {
		t.Fatalf("owed after a card payment of 100.00 at 10%% = %s; want 90.00", before.Owed)
	}

	byIssuer := f.invoice(f.customer("stripe", stripetest.PMDeclined), "500.00")
	f.collect(byIssuer)
	if _, err := f.svc.MarkPaidManually(f.ctx, f.provider, byIssuer, "transfer to the issuer"); err != nil {
		t.Fatal(err)
	}
	got := owed()
	if !got.Collected.Equal(before.Collected) || got.Payments != 1 || !got.PaidToIssuer.Equal(decimal.RequireFromString("500.00")) ||
		got.PaidToIssuerPayments != 1 || !got.Owed.Equal(decimal.RequireFromString("40.00")) {
		t.Errorf("after the issuer's mark-paid of 500.00: %+v; want collected 100.00, paid to issuer 500.00, owed 90.00 - 50.00 fee = 40.00", got)
	}

	byAdmin := f.invoice(f.customer("stripe", stripetest.PMDeclined), "200.00")
	f.collect(byAdmin)
	admin := identity.Actor{Subject: "ops", Role: identity.RoleAdmin}
	if _, err := f.svc.MarkPaidManually(f.ctx, admin, byAdmin, "transfer to the platform"); err != nil {
		t.Fatal(err)
	}
	got = owed()
	if !got.Collected.Equal(decimal.RequireFromString("300.00")) || got.Payments != 2 || !got.Owed.Equal(decimal.RequireFromString("220.00")) {
		t.Errorf("after an admin's mark-paid of 200.00: %+v; want collected 300.00, owed 220.00", got)
	}
	po, err := f.svc.Payouts(f.ctx, f.provider, f.issuer, month)
	if err != nil {
		t.Fatal(err)
	}
	providers := map[string]string{}
	for _, p := range po.Payments {
		providers["platform "+p.InvoiceID.String()] = p.Provider
	}
	for _, p := range po.PaidToIssuer {
		providers["issuer "+p.InvoiceID.String()] = p.Provider
	}
	if providers["issuer "+byIssuer.String()] != "manual" || providers["platform "+byAdmin.String()] != "manual" || len(providers) != 3 {
		t.Errorf("statement items by who holds the money and provider = %v; want both marks manual, the issuer's apart", providers)
	}
}

// collect makes the invoice's payment (declined, so still to be paid).
func (f *fixture) collect(invoice uuid.UUID) {
	f.t.Helper()
	if _, err := f.svc.Collect(f.ctx, invoice); err != nil {
		f.t.Fatalf("Collect = %v", err)
	}
}
