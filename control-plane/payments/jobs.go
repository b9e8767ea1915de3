package payments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing"
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

// Profiles reads a customer's billing profile (a *billing.Service), which
// its customer at a provider is made from.
type Profiles interface {
	BillingProfile(ctx context.Context, org uuid.UUID) (billing.Profile, bool, error)
}

// ManyInserter enqueues jobs inside a transaction (a *river.Client[pgx.Tx]).
type ManyInserter interface {
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// CollectInvoiceArgs is the collection of one invoice just finalized.
type CollectInvoiceArgs struct {
	InvoiceID uuid.UUID `json:"invoice_id"`
}

// Kind implements river.JobArgs.
func (CollectInvoiceArgs) Kind() string { return "payments_collect_invoice" }

// collectAttempts bounds a collect_invoice job's tries: what it leaves
// undone, the payments cycle does.
const collectAttempts = 5

// BillingHook is billing's Payments (billing.Config.Payments): a finalized
// invoice's collection is queued in the transaction that finalizes it, so
// that it starts within seconds of the commit instead of at the next
// cycle; a closed invoice's payment is canceled (InvoiceClosed).
type BillingHook struct {
	s    *Service
	jobs ManyInserter
}

// BillingHook returns the Service's hook for billing, queuing its jobs
// with jobs.
func (s *Service) BillingHook(jobs ManyInserter) *BillingHook {
	return &BillingHook{s: s, jobs: jobs}
}

// InvoicesFinalized queues the collection of the invoices ids, in tx.
func (h *BillingHook) InvoicesFinalized(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error {
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: CollectInvoiceArgs{InvoiceID: id}, InsertOpts: &river.InsertOpts{MaxAttempts: collectAttempts}}
	}
	if _, err := h.jobs.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue invoice collection: %w", err)
	}
	return nil
}

// InvoiceClosed is Service.InvoiceClosed.
func (h *BillingHook) InvoiceClosed(ctx context.Context, invoiceID uuid.UUID, status string) error {
	return h.s.InvoiceClosed(ctx, invoiceID, status)
}

// collectInvoiceWorker runs CollectInvoiceArgs.
type collectInvoiceWorker struct {
	river.WorkerDefaults[CollectInvoiceArgs]
	s *Service
}

func (w *collectInvoiceWorker) Work(ctx context.Context, job *river.Job[CollectInvoiceArgs]) error {
	return w.s.CollectInvoice(ctx, job.Args.InvoiceID)
}

func (w *collectInvoiceWorker) Timeout(*river.Job[CollectInvoiceArgs]) time.Duration {
	return cycleTimeout
}

// CollectInvoice collects one invoice as the cycle would: one with nothing
// due is marked paid, one of an issuer with payment settings is collected
// (its customer made at the provider first); one no longer open, or of an
// issuer without settings, is left alone. Running it twice charges once.
func (s *Service) CollectInvoice(ctx context.Context, id uuid.UUID) error {
	inv, err := db.New(s.pool).InvoiceToCollect(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read invoice: %w", err)
	}
	switch {
	case inv.Status != "open":
		return nil
	case !inv.AmountDue.IsPositive():
		_, err := s.payZero(ctx, id)
		return err
	case inv.Provider == "":
		return nil
	}
	if !inv.Known {
		if _, err := s.EnsureCustomer(ctx, inv.CustomerID, inv.Provider); err != nil {
			return s.collectError(ctx, id, err)
		}
	}
	if _, err := s.Collect(ctx, id); err != nil {
		return s.collectError(ctx, id, err)
	}
	return nil
}

// collectError is what a collect_invoice job returns for err: nothing for
// a provider this control plane does not have (no retry can help; the
// cycle collects once it is configured), else the error, for River to
// retry.
func (s *Service) collectError(ctx context.Context, id uuid.UUID, err error) error {
	if errors.Is(err, ErrNotConfigured) {
		s.log.WarnContext(ctx, "invoice not collected: its issuer's provider is not configured here", "invoice", id, "err", err)
		return nil
	}
	return fmt.Errorf("collect invoice %s: %w", id, err)
}

// CloseSettled cancels the payments still open of up to max invoices
// billing closed (InvoiceClosed), should its word after the commit have
// been lost. It returns how many it closed.
func (s *Service) CloseSettled(ctx context.Context, max int) (int, error) {
	rows, err := db.New(s.pool).PaymentsOfClosedInvoices(ctx, int32(max))
	if err != nil {
		return 0, fmt.Errorf("list payments of closed invoices: %w", err)
	}
	var errs []error
	for _, r := range rows {
		if err := s.InvoiceClosed(ctx, r.InvoiceID, r.Status); err != nil {
			errs = append(errs, fmt.Errorf("close payment of invoice %s: %w", r.InvoiceID, err))
		}
	}
	return len(rows) - len(errs), errors.Join(errs...)
}

// RegisterJobs adds the payments workers to w and returns their periodic
// jobs. A cycle marks open invoices with nothing due paid, collects open
// invoices that have no payment yet, makes the retries that are due,
// reconciles attempts left unanswered and cancels the payments of
// invoices billing closed; dunning_escalate, at the same interval,
// suspends the past_due subscriptions whose grace ended
// (EscalateDunning). payments_collect_invoice collects an invoice as soon
// as billing finalized it (BillingHook).
func (s *Service) RegisterJobs(w *river.Workers, every JobSchedule) []*river.PeriodicJob {
	if every.Cycle <= 0 {
		every.Cycle = time.Minute
	}
	river.AddWorker(w, &collectInvoiceWorker{s: s})
	river.AddWorker(w, periodic.NewWorker[CycleArgs](func(ctx context.Context) error {
		rep, err := s.RunCycle(ctx)
		if rep != (CycleReport{}) {
			s.log.InfoContext(ctx, "payments cycle", "paid_at_zero", rep.Zero, "collected", rep.Collected,
				"retried", rep.Retried, "reconciled", rep.Reconciled, "closed", rep.Closed, "refunds", rep.Refunds)
		}
		if err != nil {
			s.log.WarnContext(ctx, "payments cycle failed in part; the next run tries again", "err", err)
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
// reconciled, refunds reconciled.
type CycleReport struct {
	Zero, Collected, Retried, Reconciled, Closed, Refunds int
}

// RunCycle runs every payments step once. A step or an invoice that fails
// does not stop the others; the next run tries again, and the errors are
// returned together.
func (s *Service) RunCycle(ctx context.Context) (CycleReport, error) {
	var rep CycleReport
	var errs [6]error
	rep.Closed, errs[0] = s.CloseSettled(ctx, batch)
	rep.Zero, errs[1] = s.PayZeroInvoices(ctx, batch)
	rep.Collected, errs[2] = s.CollectNew(ctx, batch)
	rep.Retried, errs[3] = s.RetryDue(ctx, batch)
	rep.Reconciled, errs[4] = s.Reconcile(ctx, batch)
	rep.Refunds, errs[5] = s.ReconcileRefunds(ctx, batch)
	return rep, errors.Join(errs[:]...)
}

// PayZeroInvoices marks up to max open invoices with nothing due (a zero
// total, or one the customer's credit covered) paid, as the system,
// audited and announced: there is nothing to collect, so nothing else
// would close them. It covers every issuer, those without payment
// settings too: nothing is asked of a provider, and an invoice left open
// would be reminded to a customer who owes nothing. One that fails is
// tried again at the next run and holds up none of the others.
func (s *Service) PayZeroInvoices(ctx context.Context, max int) (int, error) {
	items, err := db.New(s.pool).InvoicesNothingDue(ctx, int32(max))
	if err != nil {
		return 0, fmt.Errorf("list invoices with nothing due: %w", err)
	}
	n := 0
	var errs []error
	for _, inv := range items {
		done, err := s.payZero(ctx, inv.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("pay invoice %s with nothing due: %w", inv.ID, err))
			continue
		}
		if done {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// payZero marks an open invoice with nothing due paid, audited, and
// announces invoice.paid; false when it is no longer such an invoice.
func (s *Service) payZero(ctx context.Context, id uuid.UUID) (done bool, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		now := s.now()
		n, err := db.New(tx).InvoiceMarkPaidNothingDue(ctx, db.InvoiceMarkPaidNothingDueParams{ID: id, At: &now})
		if err != nil || n == 0 {
			return err
		}
		done = true
		sum, err := s.invoicePaid(ctx, tx, id)
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: sum.IssuerID,
			Action: "invoice.mark_paid", TargetType: "invoice", TargetID: id.String(),
			Before: map[string]any{"status": "open"}, After: map[string]any{"status": "paid", "amount_due": "0"},
		})
	})
	if err != nil {
		return false, fmt.Errorf("mark invoice %s paid: %w", id, err)
	}
	return done, nil
}

// CollectNew starts the payment of up to max open invoices with an amount
// due and no payment yet, of issuers with payment settings. A customer
// without a customer at the issuer's provider gets one first (without a
// payment method, the attempt fails and is retried on the schedule, so
// the customer is asked to pay). An invoice that fails does not stop the
// others, and is put off (CollectBackoff) so that a few failing ones, a
// customer the provider refuses say, do not fill every batch.
func (s *Service) CollectNew(ctx context.Context, max int) (int, error) {
	q := db.New(s.pool)
	items, err := q.InvoicesToCollect(ctx, db.InvoicesToCollectParams{Now: s.now(), Max: int32(max)})
	if err != nil {
		return 0, fmt.Errorf("list invoices to collect: %w", err)
	}
	var errs []error
	n := 0
	for _, inv := range items {
		var err error
		if !inv.Known {
			_, err = s.EnsureCustomer(ctx, inv.CustomerID, inv.Provider)
		}
		if err == nil {
			_, err = s.Collect(ctx, inv.ID)
		}
		if err == nil {
			n++
			continue
		}
		errs = append(errs, fmt.Errorf("collect invoice %s: %w", inv.ID, err))
		if berr := q.CollectBackoff(ctx, db.CollectBackoffParams{InvoiceID: inv.ID, FirstAfter: s.now().Add(time.Hour),
			LastError: truncate(err.Error(), 500)}); berr != nil {
			errs = append(errs, fmt.Errorf("put off invoice %s: %w", inv.ID, berr))
		}
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
// there and recording it when there is none yet. The request is committed
// first, with its idempotency key and parameters (the billing profile as
// it is then): callers at once, and a caller repeating after a crash or a
// timeout, send the same key with the same parameters and get the same
// customer; once the provider has forgotten the key (keyLifetime), a new
// request with a new key is made. The customer recorded first is returned
// to every caller.
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
	in, keyNo, err := s.customerRequest(ctx, customer, provider)
	if err != nil {
		return metering.CustomerRef{}, err
	}
	ref, err := prov.EnsureCustomer(ctx, in)
	if err != nil && definite(err) {
		// Nothing was made: the next try reads the profile again (fixed
		// by then, perhaps) instead of repeating what was refused.
		now := s.now()
		if rerr := db.New(s.pool).CustomerRequestRefused(ctx, db.CustomerRequestRefusedParams{At: &now, Code: truncate(failureCode(err), 100),
			CustomerID: customer, Provider: provider, KeyNo: keyNo}); rerr != nil {
			err = errors.Join(err, fmt.Errorf("record refused payment customer request: %w", rerr))
		}
	}
	if err != nil {
		return metering.CustomerRef{}, fmt.Errorf("ensure payment customer: %w", err)
	}
	// A payment method recorded meanwhile (a webhook) is kept.
	id, err := db.New(s.pool).CustomerRecord(ctx, db.CustomerRecordParams{CustomerID: customer, Provider: provider, ProviderCustomerID: ref.ID})
	if err != nil {
		return metering.CustomerRef{}, fmt.Errorf("record payment customer: %w", err)
	}
	if id != ref.ID {
		s.log.WarnContext(ctx, "a second customer made at the provider; the first recorded is kept", "customer", customer,
			"provider", provider, "kept", id, "unused", ref.ID)
	}
	return metering.CustomerRef{Provider: provider, ID: id}, nil
}

// customerParams are the stored parameters of a customer's creation at a
// provider.
type customerParams struct {
	Name    string           `json:"name"`
	Email   string           `json:"email"`
	TaxID   string           `json:"tax_id"`
	Address metering.Address `json:"address"`
}

// customerRequest commits the request that creates customer's customer at
// provider (a new one unless one younger than keyLifetime is recorded)
// and returns it as recorded.
func (s *Service) customerRequest(ctx context.Context, customer uuid.UUID, provider string) (metering.CustomerInput, int32, error) {
	params, err := s.customerProfile(ctx, customer)
	if err != nil {
		return metering.CustomerInput{}, 0, err
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return metering.CustomerInput{}, 0, fmt.Errorf("encode payment customer: %w", err)
	}
	var req db.CustomerRequestGetRow
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		now := s.now()
		if err := q.CustomerRequestClaim(ctx, db.CustomerRequestClaimParams{CustomerID: customer, Provider: provider,
			Params: raw, Now: now, Stale: now.Add(-keyLifetime)}); err != nil {
			return fmt.Errorf("record payment customer request: %w", err)
		}
		req, err = q.CustomerRequestGet(ctx, db.CustomerRequestGetParams{CustomerID: customer, Provider: provider})
		return err
	})
	if err != nil {
		return metering.CustomerInput{}, 0, fmt.Errorf("record payment customer request: %w", err)
	}
	var stored customerParams
	if err := json.Unmarshal(req.Params, &stored); err != nil {
		return metering.CustomerInput{}, 0, fmt.Errorf("decode payment customer request: %w", err)
	}
	return metering.CustomerInput{CustomerID: customer.String(), Name: stored.Name, Email: stored.Email, TaxID: stored.TaxID,
		Address: stored.Address, IdempotencyKey: fmt.Sprintf("veil-cus-%s-%d", customer, req.KeyNo)}, req.KeyNo, nil
}

// customerProfile is what the provider is told of customer: its billing
// profile (Profiles), or its organization's name without one.
func (s *Service) customerProfile(ctx context.Context, customer uuid.UUID) (customerParams, error) {
	if s.cfg.Profiles != nil {
		p, ok, err := s.cfg.Profiles.BillingProfile(ctx, customer)
		if err != nil {
			return customerParams{}, err
		}
		if ok {
			return customerParams{Name: p.LegalName, Email: p.Email, TaxID: p.TaxID, Address: metering.Address{
				Line1: p.AddressLine1, Line2: p.AddressLine2, PostalCode: p.PostalCode, City: p.City, State: p.Region, Country: p.Country,
			}}, nil
		}
	}
	name, err := db.New(s.pool).OrganizationName(ctx, customer)
	if errors.Is(err, pgx.ErrNoRows) {
		return customerParams{}, fmt.Errorf("ensure payment customer: %w: organization %s", ErrNotFound, customer)
	}
	if err != nil {
		return customerParams{}, fmt.Errorf("read organization: %w", err)
	}
	return customerParams{Name: name}, nil
}
