package billing

import (
	"testing"

	"github.com/google/uuid"
)

// An ended redemption discounts the periods that end before it ended, and
// no later one: a forever promotion ended during the second period
// discounts the first invoice only.
func TestEndedPromotionDiscountsNoLaterPeriod(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, sub := f.closedPeriod()
	second := f.period(sub, periodStart.AddDate(0, 1, 0), periodStart.AddDate(0, 2, 0), false)
	f.clock.Set(periodStart.AddDate(0, 2, 1))
	var promo uuid.UUID
	f.scan(&promo, `INSERT INTO promotions (organization_id, code, kind, value, duration, created_by)
		VALUES ($1, 'ALWAYS20', 'percent_off', 20, 'forever', 'prov') RETURNING id`, f.issuer)
	f.exec(`INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at, ended_at)
		VALUES ($1, $2, $3, 'cust', $4, $5)`, promo, sub, customer, periodStart, periodStart.AddDate(0, 1, 1))
	if n, err := f.svc.BuildDrafts(f.ctx, 10); err != nil || n != 2 {
		t.Fatalf("BuildDrafts = %d, %v; want 2", n, err)
	}
	secondID := f.invoiceOfPeriod(second)
	var firstID uuid.UUID
	f.scan(&firstID, `SELECT id FROM invoices WHERE subscription_id = $1 AND id <> $2`, sub, secondID)
	first, err := f.svc.Invoice(f.ctx, f.provider, firstID)
	if err != nil {
		t.Fatal(err)
	}
	later, err := f.svc.Invoice(f.ctx, f.provider, secondID)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Discount.Equal(dec("2")) || !later.Discount.IsZero() {
		t.Fatalf("discounts = %s, %s; want 2 (ended after the first period), 0 (ended during the second)", first.Discount, later.Discount)
	}
}
