package billing

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
)

// paymentsRecorder is a Payments that records what billing tells it, and
// fails while fail is set.
type paymentsRecorder struct {
	mu        sync.Mutex
	fail      bool
	finalized []uuid.UUID
	closed    []string
}

var errPaymentsDown = errors.New("payments down")

func (p *paymentsRecorder) InvoicesFinalized(_ context.Context, tx pgx.Tx, ids []uuid.UUID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errPaymentsDown
	}
	if tx == nil {
		return errors.New("no transaction")
	}
	p.finalized = append(p.finalized, ids...)
	return nil
}

func (p *paymentsRecorder) InvoiceClosed(_ context.Context, id uuid.UUID, status string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errPaymentsDown
	}
	p.closed = append(p.closed, id.String()+" "+status)
	return nil
}

// Billing tells payments of every invoice it finalizes, one at a time or
// by the cycle's batch, in the finalizing transaction (a failure there
// finalizes nothing), and of every invoice it closes, after the commit (a
// failure there changes nothing of the close). MarkPaid announces
// invoice.paid.
func TestPaymentsHook(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	pays := &paymentsRecorder{}
	f.svc.cfg.Payments = pays
	_, single := f.closedPeriod()
	_, batched := f.closedPeriod()
	if _, err := f.svc.BuildDrafts(f.ctx, 100); err != nil {
		t.Fatal(err)
	}
	one := f.invoiceOf(single)
	pays.fail = true
	if _, err := f.svc.Finalize(f.ctx, f.provider, one); !errors.Is(err, errPaymentsDown) {
		t.Fatalf("Finalize with payments failing = %v; want its error", err)
	}
	var st string
	f.scan(&st, `SELECT status::text FROM invoices WHERE id = $1`, one)
	if st != StatusDraft {
		t.Fatalf("invoice after a finalization payments refused = %s; want draft", st)
	}
	pays.fail = false
	if _, err := f.svc.Finalize(f.ctx, f.provider, one); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	two := f.invoiceOf(batched)
	if !slices.Equal(pays.finalized, []uuid.UUID{one, two}) {
		t.Fatalf("finalized told = %v; want %s then %s", pays.finalized, one, two)
	}

	admin := identity.Actor{Subject: "admin", Role: identity.RoleAdmin}
	if _, err := f.svc.MarkPaid(f.ctx, admin, one); err != nil {
		t.Fatal(err)
	}
	pays.fail = true
	if inv, err := f.svc.Void(f.ctx, f.provider, two); err != nil || inv.Status != StatusVoid {
		t.Fatalf("Void with payments failing after the commit = %s, %v; want void", inv.Status, err)
	}
	if want := []string{one.String() + " paid"}; !slices.Equal(pays.closed, want) {
		t.Errorf("closed told = %v; want %v", pays.closed, want)
	}
	if n := slices.Index(f.hooks.events, EventInvoicePaid); n < 0 {
		t.Errorf("events = %v; want %s", f.hooks.events, EventInvoicePaid)
	}
}
