package payments

import (
	"errors"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// The manual provider: a payment pending with transfer instructions until
// the issuer marks it paid, audited.
func TestManualProvider(t *testing.T) {
	t.Parallel()
	f := setup(t, "manual")
	cust := f.customer("manual", "")
	inv := f.invoice(cust, "250.00")
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "pending" || p.Instructions == nil || p.Instructions.Amount.Minor != 25000 {
		t.Fatalf("Collect = %+v, %v; want pending with instructions for 25000", p, err)
	}
	var number string
	f.scan(&number, `SELECT number FROM invoices WHERE id = $1`, inv)
	if p.Instructions.Reference != number {
		t.Errorf("reference = %s; want the invoice number %s", p.Instructions.Reference, number)
	}
	f.clock.Advance(10 * 24 * time.Hour)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 0 {
		t.Errorf("Reconcile = %d, %v; want a pending transfer left alone", n, err)
	}
	if due, _ := f.svc.DueRetries(f.ctx, f.clock.Now(), 10); len(due) != 0 {
		t.Errorf("DueRetries = %v; want none", due)
	}
	consumer := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: cust}
	stranger := identity.Actor{Subject: "s", Role: identity.RoleProvider, OrgID: testenv.Org(t, f.pool, "other-"+testenv.Suffix())}
	if _, err := f.svc.MarkPaidManually(f.ctx, consumer, inv, "TRX-1"); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("MarkPaidManually by the customer = %v; want forbidden", err)
	}
	if _, err := f.svc.MarkPaidManually(f.ctx, stranger, inv, "TRX-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkPaidManually by another organization = %v; want not found", err)
	}
	if _, err := f.svc.Get(f.ctx, stranger, inv); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get by another organization = %v; want not found", err)
	}
	if p, err = f.svc.MarkPaidManually(f.ctx, f.provider, inv, "TRX-1"); err != nil || p.Status != "succeeded" {
		t.Fatalf("MarkPaidManually = %+v, %v; want succeeded", p, err)
	}
	if st := f.invoiceStatus(inv); st != "paid" {
		t.Errorf("invoice %s; want paid", st)
	}
	var who string
	f.scan(&who, `SELECT actor || '/' || (after->>'reference') FROM audit_log WHERE action = 'payment.succeeded' AND target_id = $1`, inv.String())
	if who != "prov/TRX-1" {
		t.Errorf("audit = %s; want prov/TRX-1", who)
	}
	if _, err := f.svc.MarkPaidManually(f.ctx, f.provider, inv, "TRX-2"); !errors.Is(err, ErrPaymentState) {
		t.Errorf("MarkPaidManually again = %v; want ErrPaymentState", err)
	}
}
