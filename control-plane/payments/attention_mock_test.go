package payments

import (
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering/stripepay"
)

// Against stripe-mock: the payments cycle starts the collection of each
// new invoice of a customer made at Stripe, puts none off, and an amount
// Stripe can never take (KWD 5.125) needs attention, announced.
func TestCollectNewStripeMock(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	mock := testenv.StripeMock(t)
	sp, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Providers["stripe"] = sp
	cus := testenv.Org(t, f.pool, "cust-"+testenv.Suffix())
	f.scan(&f.sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, $4, $5) RETURNING id`, cus, f.api, f.version, start, start.AddDate(0, 1, 0))
	eur := f.invoice(cus, "10.00")
	var kwd uuid.UUID
	f.scan(&kwd, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
		subtotal, total, amount_due, finalized_at, due_at)
		VALUES ($1, $2, $3, 'open', $4, 'KWD', $5, $6, 5.125, 5.125, 5.125, $6, $6) RETURNING id`,
		f.issuer, cus, f.sub, "INV-"+testenv.Suffix(), start.AddDate(0, -1, 0), start)
	ref, err := f.svc.EnsureCustomer(f.ctx, cus, "stripe")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SetCustomer(f.ctx, cus, ref, "pm_card_visa"); err != nil {
		t.Fatal(err)
	}
	if n, err := f.svc.CollectNew(f.ctx, 10); n != 2 {
		t.Fatalf("CollectNew = %d, %v; want both started", n, err)
	}
	if n := f.count(`SELECT count(*) FROM payments WHERE invoice_id = $1`, eur); n != 1 {
		t.Errorf("the EUR invoice has %d payments; want 1", n)
	}
	if p := f.payment(kwd); p.Status != "needs_attention" || p.AttentionReason == "" {
		t.Errorf("KWD payment = %s (%q); want needs_attention with its reason", p.Status, p.AttentionReason)
	}
	if n := f.hooks.count(EventPaymentNeedsAttention); n != 2 {
		t.Errorf("%s announced %d times; want 2", EventPaymentNeedsAttention, n)
	}
	if n := f.count(`SELECT count(*) FROM payment_collect_backoff`); n != 0 {
		t.Errorf("%d invoices put off; want none", n)
	}
}
