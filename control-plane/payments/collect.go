package payments

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// call is a provider call an attempt committed and is about to make.
type call struct {
	prov    metering.PaymentProvider
	payment uuid.UUID
	attempt uuid.UUID
	in      metering.CollectInput
}

// Collect collects an open invoice's amount due: it starts the payment's
// next attempt when one is due, or repeats the call of an attempt under
// way that nobody has answered for a while (a crash, a timeout), with
// its key. A payment already settled, under way or waiting for its next
// attempt is returned as it is. A retryable provider error is returned
// with the attempt left for the next Collect or Reconcile.
func (s *Service) Collect(ctx context.Context, invoiceID uuid.UUID) (Payment, error) {
	var c *call
	var out Payment
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		c, out, err = s.begin(ctx, tx, invoiceID)
		return err
	})
	var closed *closedError
	if errors.As(err, &closed) {
		// Closed in billing without a word to payments (voided, paid,
		// written off): its payment stops here.
		if _, known := closeCodes[closed.status]; known {
			return out, errors.Join(err, s.InvoiceClosed(ctx, invoiceID, closed.status))
		}
	}
	if err != nil || c == nil {
		return out, err
	}
	return s.run(ctx, c)
}

// Retry makes a payment's next attempt (DueRetries lists those due).
func (s *Service) Retry(ctx context.Context, paymentID uuid.UUID) (Payment, error) {
	p, err := db.New(s.pool).PaymentGet(ctx, paymentID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, ErrNotFound
	}
	if err != nil {
		return Payment{}, fmt.Errorf("read payment: %w", err)
	}
	return s.Collect(ctx, p.InvoiceID)
}

// DueRetries lists the payments whose next attempt is due at now.
func (s *Service) DueRetries(ctx context.Context, now time.Time, max int) ([]uuid.UUID, error) {
	if max <= 0 || max > 10000 {
		max = 1000
	}
	ids, err := db.New(s.pool).PaymentsDue(ctx, db.PaymentsDueParams{Now: &now, Max: int32(max)})
	if err != nil {
		return nil, fmt.Errorf("list due payments: %w", err)
	}
	return ids, nil
}

// begin decides, under the payment's row lock, whether a provider call is
// to be made, and commits its attempt first.
func (s *Service) begin(ctx context.Context, tx pgx.Tx, invoiceID uuid.UUID) (*call, Payment, error) {
	q := db.New(tx)
	inv, err := q.InvoiceForCollect(ctx, invoiceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Payment{}, ErrNotFound
	}
	if err != nil {
		return nil, Payment{}, fmt.Errorf("read invoice: %w", err)
	}
	if inv.Status != "open" {
		return nil, Payment{}, &closedError{status: inv.Status}
	}
	if !inv.AmountDue.IsPositive() {
		return nil, Payment{}, ErrNothingToCollect
	}
	st, err := q.SettingsGet(ctx, inv.IssuerID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Payment{}, ErrNotConfigured
	}
	if err != nil {
		return nil, Payment{}, fmt.Errorf("read payment settings: %w", err)
	}
	prov := s.cfg.Providers[st.Provider]
	if prov == nil {
		return nil, Payment{}, fmt.Errorf("%w: provider %q", ErrNotConfigured, st.Provider)
	}
	amount, err := metering.MinorUnits(inv.AmountDue, inv.Currency)
	if err != nil {
		return nil, Payment{}, fmt.Errorf("collect invoice %s: %w", inv.Number, err)
	}
	err = q.PaymentInsert(ctx, db.PaymentInsertParams{InvoiceID: inv.ID, IssuerID: inv.IssuerID, CustomerID: inv.CustomerID,
		Provider: st.Provider, Amount: amount.Minor, Currency: amount.Currency})
	if err != nil {
		return nil, Payment{}, fmt.Errorf("insert payment: %w", err)
	}
	p, err := q.PaymentLockByInvoice(ctx, inv.ID)
	if err != nil {
		return nil, Payment{}, fmt.Errorf("lock payment: %w", err)
	}
	att, err := s.nextAttempt(ctx, tx, p)
	if err != nil {
		return nil, toPayment(p), err
	}
	if att == nil {
		if p, err = q.PaymentLock(ctx, p.ID); err != nil {
			return nil, Payment{}, fmt.Errorf("read payment: %w", err)
		}
		return nil, toPayment(p), nil
	}
	c := &call{prov: s.cfg.Providers[p.Provider], payment: p.ID, attempt: att.ID, in: metering.CollectInput{
		Customer:  metering.CustomerRef{Provider: p.Provider, ID: att.ProviderCustomerID},
		InvoiceID: inv.ID.String(), InvoiceNumber: inv.Number,
		Amount:          metering.Money{Minor: p.Amount, Currency: p.Currency},
		PaymentMethodID: att.PaymentMethodID, IdempotencyKey: att.IdempotencyKey,
	}}
	if c.prov == nil {
		return nil, Payment{}, fmt.Errorf("%w: provider %q", ErrNotConfigured, p.Provider)
	}
	return c, toPayment(p), nil
}

// nextAttempt returns the attempt to call the provider with: a new one
// when the payment's next attempt is due, one under way that nobody has
// answered for unsettledAfter (claimed again), or nil when there is
// nothing to call.
func (s *Service) nextAttempt(ctx context.Context, tx pgx.Tx, p db.Payment) (*db.PaymentAttempt, error) {
	q := db.New(tx)
	now := s.now()
	switch p.Status {
	case "succeeded", "failed", "canceled", "needs_attention":
		return nil, nil
	}
	open, err := q.AttemptOpenOf(ctx, p.ID)
	switch {
	case err == nil:
		if open.Status != "creating" || open.UpdatedAt.After(now.Add(-unsettledAfter)) {
			return nil, nil
		}
		if open.CreatedAt.Before(now.Add(-keyLifetime)) {
			// The provider may have forgotten the key: a call now could
			// charge a second time. A person settles it.
			s.log.Error("payment attempt unanswered past its key's lifetime: settle it by hand",
				"payment", p.ID, "key", open.IdempotencyKey)
			return nil, nil
		}
		if err := q.AttemptClaim(ctx, db.AttemptClaimParams{Now: now, ID: open.ID}); err != nil {
			return nil, fmt.Errorf("claim payment attempt: %w", err)
		}
		return &open, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("read payment attempt: %w", err)
	}
	if p.NextAttemptAt != nil && p.NextAttemptAt.After(now) {
		return nil, nil
	}
	cus, err := q.CustomerGet(ctx, db.CustomerGetParams{CustomerID: p.CustomerID, Provider: p.Provider})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoPaymentCustomer
	}
	if err != nil {
		return nil, fmt.Errorf("read payment customer: %w", err)
	}
	pm := cus.DefaultPmID
	if r, ok := s.cfg.Providers[p.Provider].(methodReader); ok && pm == "" {
		// Read now and stored with the key, so that a repeat of the call
		// sends the same parameters whatever the customer changes later.
		var rerr error
		if pm, rerr = r.DefaultPaymentMethod(ctx, cus.ProviderCustomerID); rerr != nil && !definite(rerr) {
			return nil, fmt.Errorf("read default payment method: %w", rerr)
		}
		if rerr != nil {
			// The provider refused (an unknown customer): the attempt
			// fails as its call would have, and the schedule goes on.
			return nil, s.failAtOnce(ctx, tx, p, cus.ProviderCustomerID, rerr)
		}
	}
	n := p.Attempts + 1
	att, err := q.AttemptInsert(ctx, db.AttemptInsertParams{PaymentID: p.ID, AttemptNo: n,
		IdempotencyKey:     fmt.Sprintf("veil-inv-%s-a%d", p.InvoiceID, n),
		ProviderCustomerID: cus.ProviderCustomerID, PaymentMethodID: pm, Now: now})
	if err != nil {
		return nil, fmt.Errorf("insert payment attempt: %w", err)
	}
	if err := q.PaymentStartAttempt(ctx, p.ID); err != nil {
		return nil, fmt.Errorf("start payment attempt: %w", err)
	}
	return &att, nil
}

// closedError is begin's word that the invoice is no longer open:
// Collect stops its payment (InvoiceClosed) after the rollback.
type closedError struct{ status string }

func (e *closedError) Error() string { return ErrInvoiceState.Error() + ": " + e.status }

func (e *closedError) Unwrap() error { return ErrInvoiceState }

// failAtOnce records a new attempt failed with a provider's refusal that
// came before its call could be made.
func (s *Service) failAtOnce(ctx context.Context, tx pgx.Tx, p db.Payment, customer string, cause error) error {
	q := db.New(tx)
	n := p.Attempts + 1
	att, err := q.AttemptInsert(ctx, db.AttemptInsertParams{PaymentID: p.ID, AttemptNo: n,
		IdempotencyKey: fmt.Sprintf("veil-inv-%s-a%d", p.InvoiceID, n), ProviderCustomerID: customer, Now: s.now()})
	if err != nil {
		return fmt.Errorf("insert payment attempt: %w", err)
	}
	if err := q.PaymentStartAttempt(ctx, p.ID); err != nil {
		return fmt.Errorf("start payment attempt: %w", err)
	}
	if p, err = q.PaymentLock(ctx, p.ID); err != nil {
		return fmt.Errorf("read payment: %w", err)
	}
	return s.settle(ctx, tx, p, att, outcome{PaymentResult: metering.PaymentResult{Status: metering.PaymentFailed,
		FailureCode: failureCode(cause), FailureMessage: cause.Error()}})
}

// methodReader is a provider whose payments need a payment method, which
// it can read as the customer's default.
type methodReader interface {
	DefaultPaymentMethod(ctx context.Context, customer string) (string, error)
}

// run makes a committed attempt's provider call and records its result.
func (s *Service) run(ctx context.Context, c *call) (Payment, error) {
	var res metering.PaymentResult
	var err error
	if _, needs := c.prov.(methodReader); needs && c.in.PaymentMethodID == "" {
		res = metering.PaymentResult{Status: metering.PaymentFailed, Amount: c.in.Amount,
			FailureCode: "no_payment_method", FailureMessage: "the customer has no default payment method"}
	} else {
		res, err = c.prov.Collect(ctx, c.in)
	}
	if errors.Is(err, metering.ErrIdempotencyConflict) {
		// The key was used before: that call may have charged. What it
		// made, if anything, is looked up rather than assumed.
		if f, ok := c.prov.(finder); ok {
			found, ferr := f.FindPayment(ctx, c.in.InvoiceID, c.in.IdempotencyKey)
			if ferr == nil {
				res, err = found, nil
			} else if !errors.Is(ferr, metering.ErrPaymentNotFound) {
				err = errors.Join(err, ferr)
			}
		}
	}
	// A reuse of the key proves a call was made before, not that nothing
	// was charged: the attempt stays for a search to settle.
	if err != nil && (!definite(err) || errors.Is(err, metering.ErrIdempotencyConflict)) {
		s.log.Warn("payment attempt left for a retry", "invoice", c.in.InvoiceID, "key", c.in.IdempotencyKey, "err", err)
		p, gerr := db.New(s.pool).PaymentGet(ctx, c.payment)
		if gerr != nil {
			return Payment{}, errors.Join(err, gerr)
		}
		return toPayment(p), fmt.Errorf("collect invoice %s: %w", c.in.InvoiceNumber, err)
	}
	code, never := uncollectible(err)
	if err != nil {
		res = metering.PaymentResult{Status: metering.PaymentFailed, FailureCode: failureCode(err), FailureMessage: err.Error()}
	}
	var out Payment
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := q.PaymentLock(ctx, c.payment)
		if err != nil {
			return fmt.Errorf("lock payment: %w", err)
		}
		att, err := q.AttemptLock(ctx, c.attempt)
		if err != nil {
			return fmt.Errorf("lock payment attempt: %w", err)
		}
		if never && att.Status == "creating" && p.Status == "processing" {
			err = s.needsAttention(ctx, tx, p, att, code, res.FailureMessage)
		} else {
			err = s.settle(ctx, tx, p, att, outcome{PaymentResult: res})
		}
		if err != nil {
			return err
		}
		if p, err = q.PaymentLock(ctx, c.payment); err != nil {
			return fmt.Errorf("read payment: %w", err)
		}
		out = toPayment(p)
		return nil
	})
	out.Instructions = res.Instructions
	if err != nil {
		return out, err
	}
	// An attempt canceled while this call was under way, or one this
	// success superseded, is canceled at the provider now.
	return out, s.resolveDoubts(ctx, &c.payment)
}

// ErrInFlight: an attempt of the payment is under way; a new one waits
// for its outcome.
var ErrInFlight = errors.New("a payment attempt is under way")

// PayNow makes a new attempt at once for the payment of an open invoice
// that failed, for good or until its next retry, for the customer's
// members (a customer who just added a card) and the issuer's providers
// and admins, audited. An attempt under way is ErrInFlight; a payment
// that succeeded, was canceled or needs a person is ErrPaymentState.
func (s *Service) PayNow(ctx context.Context, actor identity.Actor, invoiceID uuid.UUID) (Payment, error) {
	var c *call
	var out Payment
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		// The customer pays its own invoices; the issuer may ask too.
		p, err := lockPayment(ctx, q, invoiceID, func(p db.Payment) error {
			if !actor.CanProvide(p.IssuerID) && (actor.OrgID == uuid.Nil || actor.OrgID != p.CustomerID) {
				return ErrNotFound
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := s.payNowAllowed(ctx, q, p); err != nil {
			return err
		}
		now := s.now()
		if err := q.PaymentSetStatus(ctx, db.PaymentSetStatusParams{ID: p.ID, Status: "pending", NextAttemptAt: &now}); err != nil {
			return fmt.Errorf("record payment: %w", err)
		}
		err = audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: p.IssuerID, Action: "payment.pay_now",
			TargetType: "invoice", TargetID: p.InvoiceID.String(), Before: map[string]any{"status": p.Status},
		})
		if err != nil {
			return err
		}
		c, out, err = s.begin(ctx, tx, invoiceID)
		return err
	})
	if err != nil || c == nil {
		return out, err
	}
	return s.run(ctx, c)
}

// payNowAllowed checks, under the payment's lock, that a new attempt may
// be made now.
func (s *Service) payNowAllowed(ctx context.Context, q *db.Queries, p db.Payment) error {
	st, err := q.InvoiceStatusLock(ctx, p.InvoiceID)
	if err != nil {
		return fmt.Errorf("lock invoice: %w", err)
	}
	if st != "open" {
		return fmt.Errorf("%w: %s", ErrInvoiceState, st)
	}
	switch p.Status {
	case "failed", "pending":
	case "processing", "requires_action":
		return ErrInFlight
	default:
		return fmt.Errorf("%w: payment %s", ErrPaymentState, p.Status)
	}
	if _, err := q.AttemptOpenOf(ctx, p.ID); err == nil {
		return ErrInFlight
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read payment attempt: %w", err)
	}
	return nil
}

// PayAfterNewMethod makes a new attempt at once (PayNow, as the system)
// for each open invoice of a provider's customer whose payment failed,
// after the commit that recorded the customer's new default payment
// method: a customer who replaces a declined card is charged with it
// rather than at the next retry, or never after the last. An error of one
// invoice is logged and does not stop the others.
func (s *Service) PayAfterNewMethod(ctx context.Context, provider, providerCustomerID string) {
	ids, err := db.New(s.pool).InvoicesToPayNow(ctx, db.InvoicesToPayNowParams{Provider: provider, ProviderCustomerID: providerCustomerID})
	if err != nil {
		s.log.Warn("list payments to make again after a new payment method", "provider_customer", providerCustomerID, "err", err)
		return
	}
	for _, id := range ids {
		if _, err := s.PayNow(ctx, identity.System, id); err != nil && !errors.Is(err, ErrInFlight) {
			s.log.Warn("payment after a new payment method", "invoice", id, "err", err)
		}
	}
}
