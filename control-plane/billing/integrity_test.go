package billing

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
)

// refused runs sql and fails the test unless Postgres refuses it with a
// restrict violation (the integrity triggers' SQLSTATE).
func (f *invoiceFixture) refused(what, sql string, args ...any) {
	f.t.Helper()
	_, err := f.pool.Exec(f.ctx, sql, args...)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23001" {
		f.t.Fatalf("%s: %s = %v; want a restrict violation", what, sql, err)
	}
}

// finalized builds and finalizes the invoice of a closed period.
func (f *invoiceFixture) finalized() (inv, sub uuid.UUID) {
	f.t.Helper()
	_, sub = f.closedPeriod()
	if _, err := f.svc.BuildDrafts(f.ctx, 10); err != nil {
		f.t.Fatal(err)
	}
	inv = f.invoiceOf(sub)
	if _, err := f.svc.Finalize(f.ctx, f.provider, inv); err != nil {
		f.t.Fatal(err)
	}
	return inv, sub
}

// A finalized invoice keeps every column but its status and the status
// timestamps, moves only forward (never back to open), and is never
// deleted.
func TestFinalizedInvoiceFrozen(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	id, _ := f.finalized()
	for _, set := range []string{"amount_due = 0", "net_days = 1", "billing_period_id = NULL",
		"subscription_id = (SELECT id FROM subscriptions LIMIT 1 OFFSET 1)", "total = 0", "status = 'draft', number = NULL, finalized_at = NULL"} {
		f.refused("change of a finalized invoice", `UPDATE invoices SET `+set+` WHERE id = $1`, id)
	}
	f.exec(`UPDATE invoices SET overdue_at = now(), updated_at = now() WHERE id = $1`, id)
	f.refused("delete of a finalized invoice", `DELETE FROM invoices WHERE id = $1`, id)
	f.exec(`UPDATE invoices SET status = 'uncollectible' WHERE id = $1`, id)
	f.refused("uncollectible back to open", `UPDATE invoices SET status = 'open' WHERE id = $1`, id)
	f.exec(`UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = $1`, id)
	f.refused("paid back to open", `UPDATE invoices SET status = 'open', paid_at = NULL WHERE id = $1`, id)
	f.refused("paid to void", `UPDATE invoices SET status = 'void', paid_at = NULL, voided_at = now() WHERE id = $1`, id)

	voided, _ := f.finalized()
	if _, err := f.svc.Void(f.ctx, f.provider, voided); err != nil {
		t.Fatal(err)
	}
	f.refused("void back to open", `UPDATE invoices SET status = 'open', voided_at = NULL WHERE id = $1`, voided)
}

// A line cannot be moved into a finalized invoice (nor out of one).
func TestLineNotMovedIntoFinalizedInvoice(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	final, _ := f.finalized()
	_, sub := f.closedPeriod()
	if _, err := f.svc.BuildDrafts(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	draft := f.invoiceOf(sub)
	f.refused("line moved into a finalized invoice",
		`UPDATE invoice_lines SET invoice_id = $1, position = position + 100 WHERE invoice_id = $2`, final, draft)
	f.refused("line moved out of a finalized invoice",
		`UPDATE invoice_lines SET invoice_id = $1, position = position + 100 WHERE invoice_id = $2`, draft, final)
	f.exec(`UPDATE invoice_lines SET description = 'draft line' WHERE invoice_id = $1`, draft)
}

// The credit ledger is append-only.
func TestCreditLedgerAppendOnly(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, _ := f.closedPeriod()
	e, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("5"), Reason: "sorry"})
	if err != nil {
		t.Fatal(err)
	}
	f.refused("ledger entry changed", `UPDATE credit_ledger SET amount = 500 WHERE id = $1`, e.ID)
	f.refused("ledger entry deleted", `DELETE FROM credit_ledger WHERE id = $1`, e.ID)
}

// An adjustment is billed once: its invoice, once set, stays, and its
// amount never changes.
func TestAdjustmentFrozen(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	_, sub := f.closedPeriod()
	amount, cur := dec("-2"), "EUR"
	adj, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{Amount: &amount, Currency: &cur, Reason: "outage"})
	if err != nil {
		t.Fatal(err)
	}
	f.refused("pending adjustment's amount changed", `UPDATE billing_adjustments SET amount = -200 WHERE id = $1`, adj.ID)
	if _, err := f.svc.BuildDrafts(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	inv := f.invoiceOf(sub)
	if _, err := f.svc.Finalize(f.ctx, f.provider, inv); err != nil {
		t.Fatal(err)
	}
	other, _ := f.finalized()
	f.refused("billed adjustment moved", `UPDATE billing_adjustments SET invoice_id = $1 WHERE id = $2`, other, adj.ID)
	f.refused("billed adjustment unbilled", `UPDATE billing_adjustments SET invoice_id = NULL WHERE id = $1`, adj.ID)
	f.refused("billed adjustment deleted", `DELETE FROM billing_adjustments WHERE id = $1`, adj.ID)
}

// An issuer's 1,000,000th invoice of a year gets a seven digit number.
func TestInvoiceNumberPastSixDigits(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	f.exec(`INSERT INTO invoice_number_sequences (issuer_id, year, last) VALUES ($1, 2026, 999999)`, f.issuer)
	id, _ := f.finalized()
	var number string
	f.scan(&number, `SELECT number FROM invoices WHERE id = $1`, id)
	if number != "INV-2026-1000000" {
		t.Fatalf("number = %s; want INV-2026-1000000", number)
	}
}

// Voiding an invoice that issued credit (a negative total) takes that
// credit back; once the customer spent it, the void is refused.
func TestVoidReversesIssuedCredit(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, sub := f.closedPeriod()
	amount, cur := dec("-25"), "EUR"
	if _, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{Amount: &amount, Currency: &cur, Reason: "outage"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.BuildDrafts(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	id := f.invoiceOf(sub)
	if _, err := f.svc.Finalize(f.ctx, f.provider, id); err != nil {
		t.Fatal(err)
	}
	balance := func() string {
		t.Helper()
		var b string
		f.scan(&b, `SELECT coalesce(sum(balance), 0)::numeric(20, 2)::text FROM credit_balances WHERE customer_id = $1`, customer)
		return b
	}
	if got := balance(); got != "15.00" {
		t.Fatalf("balance after the negative invoice = %s; want 15.00", got)
	}
	// The customer spent 1.00 EUR of it.
	f.exec(`UPDATE credit_balances SET balance = 14 WHERE customer_id = $1`, customer)
	if _, err := f.svc.Void(f.ctx, f.provider, id); !errors.Is(err, ErrInsufficientCredit) || !strings.Contains(err.Error(), "spent") {
		t.Fatalf("Void with the credit spent = %v; want ErrInsufficientCredit saying it was spent", err)
	}
	f.exec(`UPDATE credit_balances SET balance = 15 WHERE customer_id = $1`, customer)
	if _, err := f.svc.Void(f.ctx, f.provider, id); err != nil {
		t.Fatal(err)
	}
	if got := balance(); got != "0.00" {
		t.Fatalf("balance after the void = %s; want 0.00", got)
	}
}
