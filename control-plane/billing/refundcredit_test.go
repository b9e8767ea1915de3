package billing

import (
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// A refund to the credit balance is a "refund" entry naming the invoice,
// written in the caller's transaction: rolled back with it.
func TestCreditRefundInCallersTransaction(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	inv, _ := f.finalized()
	var customer uuid.UUID
	if err := f.pool.QueryRow(f.ctx, `SELECT customer_id FROM invoices WHERE id = $1`, inv).Scan(&customer); err != nil {
		t.Fatal(err)
	}
	tx, err := f.pool.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.CreditRefund(f.ctx, tx, f.issuer, customer, inv, "EUR", dec("2.50"), "plan change", "prov"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(f.ctx); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(f.ctx, f.pool, func(tx pgx.Tx) error {
		if err := f.svc.CreditRefund(f.ctx, tx, f.issuer, customer, inv, "EUR", dec("0"), "", "prov"); err == nil {
			t.Error("CreditRefund of zero = nil; want an error")
		}
		return f.svc.CreditRefund(f.ctx, tx, f.issuer, customer, inv, "EUR", dec("4.00"), "plan change", "prov")
	}); err != nil {
		t.Fatal(err)
	}
	ledger, err := f.svc.CreditLedger(f.ctx, f.provider, f.issuer, customer, 0, 10)
	if err != nil || len(ledger) != 1 {
		t.Fatalf("CreditLedger = %+v, %v; want the committed entry only", ledger, err)
	}
	if e := ledger[0]; e.Kind != CreditRefund || !e.Amount.Equal(dec("4")) || e.InvoiceID == nil || *e.InvoiceID != inv {
		t.Errorf("entry %+v; want a refund of 4 naming %s", e, inv)
	}
}
