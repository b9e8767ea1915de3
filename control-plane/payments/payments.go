// Package payments collects finalized invoices through a payment provider
// (metering.PaymentProvider: Stripe, or a bank transfer marked paid by
// hand) and keeps each invoice's payment beside it: the invoice itself is
// frozen once finalized (00017) and only becomes paid.
//
// The rules that keep money right:
//   - One payment per invoice, in integer minor units of its currency.
//   - Each attempt is committed with its idempotency key
//     ("veil-inv-<invoice>-a<n>") before the provider is called, so that a
//     crash, a timeout or a concurrent caller repeats the same call with the
//     same key instead of charging twice. Only an error that proves nothing
//     was charged fails an attempt; any other leaves it "creating" for
//     Collect or Reconcile to repeat.
//   - A payment's state moves forward only: a late "failed" after a
//     "succeeded" changes nothing, and provider events apply once by id,
//     in the transaction of their effect.
//   - Refunds Veil asks for never exceed what was paid: the service
//     checks, and a trigger refuses what a race would let through.
//   - A charge the payment does not keep (a success after a void, or after
//     another attempt paid) is refunded, never left standing; an attempt
//     canceled or failed whose fate at the provider is unknown stays in
//     doubt until it is canceled there or found (resolveDoubts).
//   - An amount the provider can never take is set aside
//     (needs_attention) rather than retried and dunned.
//
// Jobs and REST routes drive it: billing's hook queues Collect when an
// invoice is finalized (a River job) and cancels the payment of an
// invoice voided, marked paid or written off (InvoiceClosed); the
// payments cycle collects what a job left, makes due retries, reconciles
// attempts and refunds with the provider, and sends the customer's
// payment emails (Notifier); ApplyEvent applies the webhook endpoint's
// events. Payouts reads an issuer's monthly payouts statement: only
// money the platform holds counts as collected.
package payments

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// Errors of the service.
var (
	// ErrNotFound: no such invoice or payment, or one of an organization
	// the actor does not act for.
	ErrNotFound = errors.New("payment not found")
	// ErrNothingToCollect: the invoice's amount due is zero; the caller
	// marks it paid.
	ErrNothingToCollect = errors.New("invoice has nothing to collect")
	// ErrInvoiceState: the invoice is not open.
	ErrInvoiceState = errors.New("invoice is not open")
	// ErrNotConfigured: the issuer has no payment settings, or its provider
	// is not configured in this control plane.
	ErrNotConfigured = errors.New("payments not configured for the issuer")
	// ErrNoPaymentCustomer: the customer has no customer at the issuer's
	// provider yet.
	ErrNoPaymentCustomer = errors.New("customer has no payment customer at the provider")
	// ErrNotPaid: a refund of a payment that has not succeeded.
	ErrNotPaid = errors.New("payment has not succeeded")
	// ErrOverRefund: a refund above what is left of the payment.
	ErrOverRefund = errors.New("refund exceeds what was paid")
	// ErrPaymentState: the payment cannot do that in its state (mark a
	// canceled payment paid, cancel a succeeded one).
	ErrPaymentState = errors.New("payment state does not allow this")
	// ErrInvalid: an input refused as it is.
	ErrInvalid = errors.New("invalid payment input")
)

// DefaultRetryDays is the retry schedule of an issuer without its own.
var DefaultRetryDays = []int32{1, 3, 5, 7}

// unsettledAfter is how long an attempt may be under way before another
// caller repeats its call: longer than a provider call takes, so that two
// callers do not send the same key at once.
const unsettledAfter = time.Minute

// keyLifetime is how long an attempt's call may be repeated with its key:
// Stripe forgets keys after 24 hours, and a repeat after that would be a
// new charge.
const keyLifetime = 23 * time.Hour

// Publisher announces payment events to organizations' webhook endpoints
// in the transaction of the change (the webhooks service's publisher).
type Publisher interface {
	Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error
}

// Config configures the Service.
type Config struct {
	Pool *pgxpool.Pool
	// Providers by name ("stripe", "manual"); an issuer's settings name
	// which one collects its invoices.
	Providers map[string]metering.PaymentProvider
	Logger    *slog.Logger
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	// Publisher announces the payment.* events (succeeded, failed,
	// refunded, refund_failed, dispute_lost, needs_attention) and
	// invoice.paid, in the transaction of the change; nil announces
	// nothing.
	Publisher Publisher
	// Dunning moves the subscriptions of invoices not paid (the
	// subscriptions service); nil moves none.
	Dunning Dunning
	// Credits takes refunds to the credit balance (billing); nil refuses
	// them.
	Credits CreditLedger
	// Metrics receives the payments' counters (stray charges,
	// mismatched events, needs_attention, over-refunded payments;
	// default: a set of its own).
	Metrics *metrics.Set
	// Profiles gives the billing profile a customer's customer at a
	// provider is made from (billing); nil, or no profile, gives its
	// organization's name only.
	Profiles Profiles
}

// Service collects invoices.
type Service struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time
	// strayCharges counts successes a payment did not keep, each
	// refunded; any is a person's to look at.
	strayCharges *metrics.Counter
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil {
		return nil, errors.New("new payments: pool is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for name, p := range cfg.Providers {
		if p == nil || p.Name() != name {
			return nil, fmt.Errorf("new payments: provider %q is registered under another name", name)
		}
	}
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	// Every series exists from the start, so that an alert on its
	// increase fires at the first one.
	for _, kind := range []string{"payment", "refund", "dispute"} {
		cfg.Metrics.GetOrCreateCounter(mismatchedName(kind))
	}
	for _, code := range needsAttentionReasons {
		cfg.Metrics.GetOrCreateCounter(needsAttentionName(code))
	}
	return &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: func() time.Time { return cfg.Now().UTC() },
		strayCharges: cfg.Metrics.NewCounter(`veil_controlplane_payment_stray_charges_total`)}, nil
}

// Payment is an invoice's payment.
type Payment struct {
	ID            uuid.UUID
	InvoiceID     uuid.UUID
	IssuerID      uuid.UUID
	CustomerID    uuid.UUID
	Provider      string
	Amount        metering.Money
	Status        string
	Attempts      int
	NextAttemptAt *time.Time
	SucceededAt   *time.Time
	Refunded      metering.Money
	// DisputedLost is what lost disputes took back.
	DisputedLost metering.Money
	// AttentionReason says why a needs_attention payment cannot be taken
	// by its provider ("amount_too_small: …").
	AttentionReason string
	// Instructions tell the customer how to pay (a bank transfer), when
	// the call that returned the Payment got them from the provider.
	Instructions *metering.PaymentInstructions
}

func toPayment(p db.Payment) Payment {
	return Payment{
		ID: p.ID, InvoiceID: p.InvoiceID, IssuerID: p.IssuerID, CustomerID: p.CustomerID, Provider: p.Provider,
		Amount: metering.Money{Minor: p.Amount, Currency: p.Currency}, Status: p.Status, Attempts: p.Attempts,
		NextAttemptAt: p.NextAttemptAt, SucceededAt: p.SucceededAt,
		Refunded:        metering.Money{Minor: p.AmountRefunded, Currency: p.Currency},
		DisputedLost:    metering.Money{Minor: p.AmountDisputedLost, Currency: p.Currency},
		AttentionReason: p.AttentionReason,
	}
}

// Settings are how an issuer collects.
type Settings struct {
	Provider  string
	RetryDays []int32
	GraceDays int32
}

// SetSettings sets an issuer's payment settings; nil RetryDays is the
// default schedule.
func (s *Service) SetSettings(ctx context.Context, issuer uuid.UUID, st Settings) error {
	if _, ok := s.cfg.Providers[st.Provider]; !ok {
		return fmt.Errorf("set payment settings: %w: provider %q not configured", ErrInvalid, st.Provider)
	}
	if st.RetryDays == nil {
		st.RetryDays = DefaultRetryDays
	}
	err := db.New(s.pool).SettingsUpsert(ctx, db.SettingsUpsertParams{
		IssuerID: issuer, Provider: st.Provider, RetryDays: st.RetryDays, GraceDays: st.GraceDays,
	})
	if err != nil {
		return fmt.Errorf("set payment settings: %w", err)
	}
	return nil
}

// SetCustomer records a customer's customer at a provider and its default
// payment method ("" when none).
func (s *Service) SetCustomer(ctx context.Context, customer uuid.UUID, ref metering.CustomerRef, paymentMethodID string) error {
	var pm *string
	if paymentMethodID != "" {
		pm = &paymentMethodID
	}
	err := db.New(s.pool).CustomerUpsert(ctx, db.CustomerUpsertParams{
		CustomerID: customer, Provider: ref.Provider, ProviderCustomerID: ref.ID, DefaultPmID: pm,
	})
	if err != nil {
		return fmt.Errorf("set payment customer: %w", err)
	}
	return nil
}

// Get returns an invoice's payment, for an actor of its issuer or
// customer.
func (s *Service) Get(ctx context.Context, actor identity.Actor, invoiceID uuid.UUID) (Payment, error) {
	p, err := db.New(s.pool).PaymentGetByInvoice(ctx, invoiceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, ErrNotFound
	}
	if err != nil {
		return Payment{}, fmt.Errorf("read payment: %w", err)
	}
	if !actor.IsAdmin() && actor.OrgID != p.IssuerID && actor.OrgID != p.CustomerID {
		return Payment{}, ErrNotFound
	}
	return toPayment(p), nil
}

// authorize lets the issuer's providers and admins act on a payment; the
// customer's members are told they may not, anyone else that there is no
// such payment.
func authorize(a identity.Actor, issuer, customer uuid.UUID) error {
	switch {
	case a.CanProvide(issuer):
		return nil
	case a.OrgID != uuid.Nil && a.OrgID == customer:
		return identity.ErrForbidden
	default:
		return ErrNotFound
	}
}

// lockPayment locks the payment of an invoice for a change that allow
// decides (authorize, or a rule of its own): no payment is ErrNotFound,
// and so is one allow refuses with ErrNotFound, so that an outsider cannot
// tell an invoice without a payment from another organization's.
func lockPayment(ctx context.Context, q *db.Queries, invoiceID uuid.UUID, allow func(db.Payment) error) (db.Payment, error) {
	p, err := q.PaymentLockByInvoice(ctx, invoiceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Payment{}, ErrNotFound
	}
	if err != nil {
		return db.Payment{}, fmt.Errorf("lock payment: %w", err)
	}
	if err := allow(p); err != nil {
		return db.Payment{}, err
	}
	return p, nil
}

// issuerOnly is the allow rule of lockPayment for changes only the issuer
// (or an admin) makes: authorize's.
func issuerOnly(a identity.Actor) func(db.Payment) error {
	return func(p db.Payment) error { return authorize(a, p.IssuerID, p.CustomerID) }
}

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// publish announces a payment event to its issuer and customer, in tx:
// the payment as tx has it now, with its attempts, rendered as the REST
// API renders it (paymentEvent).
func (s *Service) publish(ctx context.Context, tx pgx.Tx, paymentID uuid.UUID, event string) error {
	if s.cfg.Publisher == nil {
		return nil
	}
	q := db.New(tx)
	p, err := q.PaymentGet(ctx, paymentID)
	if err != nil {
		return fmt.Errorf("announce %s: read payment: %w", event, err)
	}
	attempts, err := q.AttemptsOf(ctx, p.ID)
	if err != nil {
		return fmt.Errorf("announce %s: read payment attempts: %w", event, err)
	}
	data := paymentEvent{PaymentJSON: toPayment(p).JSON(toAttempts(attempts)), IssuerID: p.IssuerID, CustomerID: p.CustomerID}
	for _, org := range []uuid.UUID{p.IssuerID, p.CustomerID} {
		if err := s.cfg.Publisher.Publish(ctx, tx, org, event, data); err != nil {
			return fmt.Errorf("announce %s: %w", event, err)
		}
	}
	return nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// definite reports whether a provider error proves that the call changed
// nothing at the provider, so that the attempt may be failed. Anything
// else (a timeout, a dropped connection, an unknown error) may have
// charged, and the attempt stays to be repeated with its key.
func definite(err error) bool {
	for _, kind := range []error{metering.ErrPaymentInvalid, metering.ErrPaymentAuth, metering.ErrIdempotencyConflict,
		metering.ErrAmountNotRepresentable, metering.ErrBadIdempotencyKey, metering.ErrPaymentUnsupported,
		metering.ErrPaymentNotFound} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// failureCode is the code a definite error leaves on a failed attempt.
func failureCode(err error) string {
	var pe *metering.ProviderError
	if errors.As(err, &pe) && pe.Code != "" {
		return pe.Code
	}
	return "provider_refused"
}
