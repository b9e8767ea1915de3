package payments

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/internal/periodic"
	"github.com/veil-platform/veil/metering"
)

// JobSchedule says how often the payments job runs (default 1m); it runs
// once when the job client starts, too.
type JobSchedule struct {
	Cycle time.Duration
}

// CycleArgs is one run of the payments cycle.
type CycleArgs struct{}

// Kind implements river.JobArgs.
func (CycleArgs) Kind() string { return "payments_cycle" }

// cycleTimeout bounds a run below the control plane's rescue of stuck
// jobs. Every step is safe to cut short or to run twice: one payment per
// invoice, one open attempt per payment, each attempt committed with its
// idempotency key before the provider is called, an invoice paid only
// from open.
const cycleTimeout = 50 * time.Second

// batch is how many items a step takes per run.
const batch = 200

// RegisterJobs adds the payments workers to w and returns their periodic
// jobs. A cycle marks open invoices with nothing due paid, collects open
// invoices that have no payment yet, makes the retries that are due and
// reconciles attempts left unanswered; dunning_escalate, at the same
// interval, suspends the past_due subscriptions whose grace ended
// (EscalateDunning).
func (s *Service) RegisterJobs(w *river.Workers, every JobSchedule) []*river.PeriodicJob {
	if every.Cycle <= 0 {
		every.Cycle = time.Minute
	}
	river.AddWorker(w, periodic.NewWorker[CycleArgs](func(ctx context.Context) error {
		rep, err := s.RunCycle(ctx)
		if rep != (CycleReport{}) {
			s.log.InfoContext(ctx, "payments cycle", "paid_at_zero", rep.Zero, "collected", rep.Collected,
				"retried", rep.Retried, "reconciled", rep.Reconciled)
		}
		return err
	}).WithTimeout(cycleTimeout))
	river.AddWorker(w, s.EscalateDunningWorker())
	return []*river.PeriodicJob{
		periodic.Job(every.Cycle, CycleArgs{}, &river.InsertOpts{MaxAttempts: 1}),
		periodic.Job(every.Cycle, EscalateDunningArgs{}, &river.InsertOpts{MaxAttempts: 1}),
	}
}

// CycleReport counts what a payments cycle did: invoices with nothing due
// marked paid, invoices whose collection started, retries made, attempts
// reconciled.
type CycleReport struct {
	Zero, Collected, Retried, Reconciled int
}

// RunCycle runs every payments step once. A step or an invoice that fails
// does not stop the others; the next run tries again, and the errors are
// returned together.
func (s *Service) RunCycle(ctx context.Context) (CycleReport, error) {
	var rep CycleReport
	var errs [4]error
	rep.Zero, errs[0] = s.PayZeroInvoices(ctx, batch)
	rep.Collected, errs[1] = s.CollectNew(ctx, batch)
	rep.Retried, errs[2] = s.RetryDue(ctx, batch)
	rep.Reconciled, errs[3] = s.Reconcile(ctx, batch)
	return rep, errors.Join(errs[:]...)
}

// PayZeroInvoices marks up to max open invoices with nothing due (a zero
// total, or one the customer's credit covered) paid, as the system,
// audited: there is nothing to collect, so nothing else would close them.
func (s *Service) PayZeroInvoices(ctx context.Context, max int) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, issuer_id FROM invoices
		WHERE status = 'open' AND amount_due = 0 ORDER BY finalized_at, id LIMIT $1`, max)
	if err != nil {
		return 0, fmt.Errorf("list invoices with nothing due: %w", err)
	}
	type invoice struct{ id, issuer uuid.UUID }
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (invoice, error) {
		var i invoice
		return i, r.Scan(&i.id, &i.issuer)
	})
	if err != nil {
		return 0, fmt.Errorf("list invoices with nothing due: %w", err)
	}
	n := 0
	for _, inv := range items {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			now := s.now()
			done, err := db.New(tx).InvoiceMarkPaid(ctx, db.InvoiceMarkPaidParams{ID: inv.id, At: &now})
			if err != nil || done == 0 {
				return err
			}
			n++
			return audit.Record(ctx, tx, audit.Change{
				Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: inv.issuer,
				Action: "invoice.mark_paid", TargetType: "invoice", TargetID: inv.id.String(),
				Before: map[string]any{"status": "open"}, After: map[string]any{"status": "paid", "amount_due": "0"},
			})
		})
		if err != nil {
			return n, fmt.Errorf("mark invoice %s paid: %w", inv.id, err)
		}
	}
	return n, nil
}

// CollectNew starts the payment of up to max open invoices with an amount
// due and no payment yet, of issuers with payment settings. A customer
// without a customer at the issuer's provider gets one first (without a
// payment method, the attempt fails and is retried on the schedule, so
// the customer is asked to pay). An invoice that fails does not stop the
// others.
func (s *Service) CollectNew(ctx context.Context, max int) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT i.id, i.customer_id, s.provider,
			EXISTS (SELECT 1 FROM payment_customers c WHERE c.customer_id = i.customer_id AND c.provider = s.provider)
		FROM invoices i JOIN payment_settings s ON s.issuer_id = i.issuer_id
		WHERE i.status = 'open' AND i.amount_due > 0
		  AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id)
		ORDER BY i.finalized_at, i.id LIMIT $1`, max)
	if err != nil {
		return 0, fmt.Errorf("list invoices to collect: %w", err)
	}
	type invoice struct {
		id, customer uuid.UUID
		provider     string
		known        bool
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (invoice, error) {
		var i invoice
		return i, r.Scan(&i.id, &i.customer, &i.provider, &i.known)
	})
	if err != nil {
		return 0, fmt.Errorf("list invoices to collect: %w", err)
	}
	var errs []error
	n := 0
	for _, inv := range items {
		if !inv.known {
			if _, err := s.EnsureCustomer(ctx, inv.customer, inv.provider); err != nil {
				errs = append(errs, fmt.Errorf("collect invoice %s: %w", inv.id, err))
				continue
			}
		}
		if _, err := s.Collect(ctx, inv.id); err != nil {
			errs = append(errs, fmt.Errorf("collect invoice %s: %w", inv.id, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// RetryDue makes the next attempt of up to max payments whose retry is
// due.
func (s *Service) RetryDue(ctx context.Context, max int) (int, error) {
	ids, err := s.DueRetries(ctx, s.now(), max)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, id := range ids {
		if _, err := s.Retry(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("retry payment %s: %w", id, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// EnsureCustomer returns the customer's customer at provider, creating it
// there and recording it when there is none yet. The idempotency key is
// the customer's own, so that two callers at once get the same one.
func (s *Service) EnsureCustomer(ctx context.Context, customer uuid.UUID, provider string) (metering.CustomerRef, error) {
	prov := s.cfg.Providers[provider]
	if prov == nil {
		return metering.CustomerRef{}, fmt.Errorf("ensure payment customer: %w: provider %q", ErrNotConfigured, provider)
	}
	cus, err := db.New(s.pool).CustomerGet(ctx, db.CustomerGetParams{CustomerID: customer, Provider: provider})
	if err == nil {
		return metering.CustomerRef{Provider: provider, ID: cus.ProviderCustomerID}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return metering.CustomerRef{}, fmt.Errorf("read payment customer: %w", err)
	}
	in := metering.CustomerInput{CustomerID: customer.String(), IdempotencyKey: "veil-cus-" + customer.String() + "-1"}
	a := &in.Address
	err = s.pool.QueryRow(ctx, `SELECT COALESCE(p.legal_name, o.name), COALESCE(p.email, ''), COALESCE(p.tax_id, ''),
			COALESCE(p.address_line1, ''), COALESCE(p.address_line2, ''), COALESCE(p.postal_code, ''), COALESCE(p.city, ''),
			COALESCE(p.region, ''), COALESCE(p.country, '')
		FROM organizations o LEFT JOIN billing_profiles p ON p.organization_id = o.id WHERE o.id = $1`, customer).
		Scan(&in.Name, &in.Email, &in.TaxID, &a.Line1, &a.Line2, &a.PostalCode, &a.City, &a.State, &a.Country)
	if errors.Is(err, pgx.ErrNoRows) {
		return metering.CustomerRef{}, fmt.Errorf("ensure payment customer: %w: organization %s", ErrNotFound, customer)
	}
	if err != nil {
		return metering.CustomerRef{}, fmt.Errorf("read billing profile: %w", err)
	}
	ref, err := prov.EnsureCustomer(ctx, in)
	if err != nil {
		return metering.CustomerRef{}, fmt.Errorf("ensure payment customer: %w", err)
	}
	// A payment method recorded meanwhile (a webhook) is kept.
	if _, err := s.pool.Exec(ctx, `INSERT INTO payment_customers (customer_id, provider, provider_customer_id)
		VALUES ($1, $2, $3) ON CONFLICT (customer_id, provider) DO NOTHING`, customer, provider, ref.ID); err != nil {
		return metering.CustomerRef{}, fmt.Errorf("record payment customer: %w", err)
	}
	return ref, nil
}
