package payments

import (
	"testing"

	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// An invoice written off while its charge is in flight: the charge that
// then succeeds is kept (the debt was real) and the invoice paid, audited
// and announced; nothing is refunded.
func TestWrittenOffLateSuccessKept(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "12.00")
	d := &during{PaymentProvider: f.stripe}
	f.svc.cfg.Providers["stripe"] = d
	d.during = func() {
		if _, err := f.pool.Exec(f.ctx, `UPDATE invoices SET status = 'uncollectible' WHERE id = $1`, inv); err != nil {
			t.Error(err)
		}
		if err := f.svc.InvoiceClosed(f.ctx, inv, "uncollectible"); err != nil {
			t.Errorf("InvoiceClosed during the call = %v", err)
		}
	}
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "succeeded" {
		t.Fatalf("Collect = %+v, %v; want succeeded", p, err)
	}
	if st := f.invoiceStatus(inv); st != "paid" {
		t.Errorf("invoice = %s; want paid", st)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	if got := f.strayRefund(inv); got != "" {
		t.Errorf("stray refund = %q; want none", got)
	}
	if list := f.refundsAt(pi); len(list) != 0 {
		t.Errorf("refunds at the provider = %+v; want none", list)
	}
	if n := f.hooks.count(EventInvoicePaid); n != 2 {
		t.Errorf("invoice.paid announced %d times; want to both organizations", n)
	}
}
