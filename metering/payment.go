package metering

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// A PaymentProvider collects finalized invoices for Veil: Stripe
// (metering/stripepay) or a bank transfer the provider marks paid itself
// (metering/manualpay). The interface speaks of invoices, customers and
// amounts in minor units, never of one provider's objects, so that billing
// drives every provider the same way:
//
//   - Every call that creates something on the provider's side takes an
//     idempotency key that the caller derives from what it is about and
//     commits before calling ("veil-inv-<invoice>-a<attempt>"): after a
//     crash, or a retryable error, the same call with the same key returns
//     the object the first call created instead of a second one. The
//     parameters of a retried call must be the same, so they come from the
//     frozen invoice only.
//   - A payment the customer's bank refuses (a card declined) is a
//     PaymentResult with Status PaymentFailed and its codes, not an error:
//     it is a failed attempt that dunning retries. An error means the call
//     did not settle anything: errors.Is(err, ErrPaymentRetryable) says the
//     same call may simply be repeated.
//   - Webhooks arrive verified and normalized (ParseWebhook); a type the
//     provider sends that Veil has no use for is WebhookIgnored, not an
//     error, so that the endpoint answers 2xx and the provider stops
//     retrying it.
//
// No secret crosses this interface into storage: a SetupSession's client
// secret goes to the portal that asked and nowhere else, and no error or
// log line carries an API key, a webhook secret or card data.
type PaymentProvider interface {
	// Name is the provider's name as stored with its objects: "stripe",
	// "manual".
	Name() string
	// EnsureCustomer creates the provider's customer for a Veil customer,
	// or updates the one in.Ref names with the billing profile.
	EnsureCustomer(ctx context.Context, in CustomerInput) (CustomerRef, error)
	// SetupPaymentMethod starts the collection of a payment method to be
	// charged later without the customer present; what it returns is for
	// the portal and is never stored.
	SetupPaymentMethod(ctx context.Context, in SetupInput) (SetupSession, error)
	// Collect charges an invoice's amount due, off-session.
	Collect(ctx context.Context, in CollectInput) (PaymentResult, error)
	// PaymentStatus reads a payment's state again, for reconciliation.
	PaymentStatus(ctx context.Context, providerPaymentID string) (PaymentResult, error)
	// CancelPayment cancels a payment not yet succeeded (a voided invoice).
	CancelPayment(ctx context.Context, providerPaymentID string) error
	// Refund gives back all or part of a succeeded payment.
	Refund(ctx context.Context, in RefundInput) (RefundResult, error)
	// ParseWebhook verifies a delivery's signature against now and returns
	// the event it carries, normalized.
	ParseWebhook(payload []byte, header http.Header, now time.Time) (WebhookEvent, error)
}

// Errors of payment providers. A provider wraps them in a *ProviderError
// (or returns them as they are) so that callers decide with errors.Is.
var (
	// ErrPaymentRetryable: the provider was not reached, timed out, limited
	// our rate or failed itself; the same call with the same idempotency
	// key may be repeated later.
	ErrPaymentRetryable = errors.New("payment provider unavailable, retry")
	// ErrPaymentInvalid: the provider refused the request as malformed or
	// impossible (unknown customer, amount below its minimum); repeating
	// it changes nothing.
	ErrPaymentInvalid = errors.New("payment request refused")
	// ErrPaymentAuth: the provider refused our credentials.
	ErrPaymentAuth = errors.New("payment provider refused the credentials")
	// ErrIdempotencyConflict: the idempotency key was used before with
	// other parameters, which means the caller derived a key from
	// something that changed.
	ErrIdempotencyConflict = errors.New("idempotency key reused with other parameters")
	// ErrPaymentNotFound: no such object at the provider.
	ErrPaymentNotFound = errors.New("payment object not found")
	// ErrPaymentUnsupported: this provider does not do that (webhooks of
	// the manual provider, a currency Stripe does not take).
	ErrPaymentUnsupported = errors.New("not supported by the payment provider")
	// ErrBadIdempotencyKey: a key that is empty, longer than 255 bytes or
	// not printable ASCII.
	ErrBadIdempotencyKey = errors.New("bad idempotency key")
	// ErrAmountNotRepresentable: an amount that is not a whole number of
	// the currency's minor units (or of what the provider accepts), is
	// negative, or does not fit in 64 bits.
	ErrAmountNotRepresentable = errors.New("amount not representable in minor units")

	// ErrBadSignature: a webhook without a valid signature by our secret.
	ErrBadSignature = errors.New("webhook signature invalid")
	// ErrStaleWebhook: a validly signed webhook whose timestamp is outside
	// the tolerance: a replay, or a clock far off.
	ErrStaleWebhook = errors.New("webhook timestamp outside tolerance")
	// ErrMalformedWebhook: a signed payload that is not an event.
	ErrMalformedWebhook = errors.New("webhook payload malformed")
	// ErrWebhookAPIVersion: an event rendered in an API version the
	// provider's client cannot read safely.
	ErrWebhookAPIVersion = errors.New("webhook API version not supported")
)

// ProviderError is an error a provider answered, with what may be shown
// and logged: its code and request id, never a secret. Kind is one of the
// errors above; errors.Is(err, ErrPaymentRetryable) and the like match it.
type ProviderError struct {
	Provider   string
	Op         string
	Kind       error
	HTTPStatus int
	Code       string
	RequestID  string
	Message    string
}

func (e *ProviderError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %v", e.Provider, e.Op, e.Kind)
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " (status %d", e.HTTPStatus)
		if e.Code != "" {
			fmt.Fprintf(&b, ", code %s", e.Code)
		}
		if e.RequestID != "" {
			fmt.Fprintf(&b, ", request %s", e.RequestID)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

func (e *ProviderError) Unwrap() error { return e.Kind }

// CheckIdempotencyKey refuses a key a provider would refuse or truncate:
// Stripe takes up to 255 characters.
func CheckIdempotencyKey(key string) error {
	if key == "" || len(key) > 255 {
		return fmt.Errorf("%w: %d bytes, want 1 to 255", ErrBadIdempotencyKey, len(key))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return fmt.Errorf("%w: byte %d is not printable ASCII", ErrBadIdempotencyKey, i)
		}
	}
	return nil
}

// Money is an amount in integer minor units of an ISO 4217 currency as
// Veil prices in it (currency.go): EUR 12.50 is {1250, EUR}, JPY 1500 is
// {1500, JPY}, KWD 1.250 is {1250, KWD}. A provider with other rules
// converts it (Stripe takes ISK in hundredths); Minor is never negative.
type Money struct {
	Minor    int64
	Currency string
}

// MinorUnits converts a decimal amount, an invoice's total as stored, to
// Money. It refuses an amount that is not a whole number of minor units
// rather than round it: an invoice is rounded once per line when it is
// built, and a payment must collect exactly what it says.
func MinorUnits(amount decimal.Decimal, code string) (Money, error) {
	c, err := CurrencyOf(code)
	if err != nil {
		return Money{}, fmt.Errorf("convert amount to minor units: %w", err)
	}
	scaled := amount.Shift(c.Exponent)
	if !scaled.IsInteger() || scaled.Sign() < 0 {
		return Money{}, fmt.Errorf("%w: %s %s with %d decimals", ErrAmountNotRepresentable, amount, code, c.Exponent)
	}
	if scaled.GreaterThan(decimal.NewFromInt(math.MaxInt64)) {
		return Money{}, fmt.Errorf("%w: %s %s overflows", ErrAmountNotRepresentable, amount, code)
	}
	return Money{Minor: scaled.IntPart(), Currency: c.Code}, nil
}

// Decimal is the amount in major units, as invoices store it.
func (m Money) Decimal() decimal.Decimal {
	c, err := CurrencyOf(m.Currency)
	if err != nil {
		return decimal.Zero
	}
	return decimal.New(m.Minor, -c.Exponent)
}

// String prints the amount as the currency shows it: "EUR 12.50".
func (m Money) String() string {
	c, err := CurrencyOf(m.Currency)
	if err != nil {
		return fmt.Sprintf("%d minor units of %q", m.Minor, m.Currency)
	}
	return m.Currency + " " + c.Format(m.Decimal())
}

// CustomerRef names a customer at a provider.
type CustomerRef struct {
	Provider string
	ID       string
}

// Address is a billing address; Country is ISO 3166-1 alpha-2.
type Address struct {
	Line1, Line2, PostalCode, City, State, Country string
}

// CustomerInput is a Veil customer's billing profile. Ref is empty to
// create the provider's customer, or names it to update it.
type CustomerInput struct {
	Ref CustomerRef
	// CustomerID is Veil's id of the customer (the consumer organization),
	// kept with the provider's customer to find it again.
	CustomerID string
	Name       string
	Email      string
	Address    Address
	// TaxID is the customer's VAT or tax number, "" when none.
	TaxID string
	// IdempotencyKey: "veil-cus-<customer>-<profile version>".
	IdempotencyKey string
}

// Validate refuses an input no provider could take.
func (in CustomerInput) Validate() error {
	if in.CustomerID == "" {
		return fmt.Errorf("%w: customer id missing", ErrPaymentInvalid)
	}
	return CheckIdempotencyKey(in.IdempotencyKey)
}

// SetupInput asks for a payment method to be set up for a customer.
type SetupInput struct {
	Customer CustomerRef
	// IdempotencyKey: "veil-setup-<customer>-<request id>".
	IdempotencyKey string
}

// SetupSession is what a portal needs to collect a payment method.
type SetupSession struct {
	// ProviderID is the provider's id of the setup (a SetupIntent's).
	ProviderID string
	// ClientSecret lets the customer's browser complete the setup with the
	// provider. It is handed to the portal and never stored or logged.
	ClientSecret string
	// Instructions are for a provider with nothing to set up (manual).
	Instructions string
}

// CollectInput is the payment of one invoice.
type CollectInput struct {
	Customer      CustomerRef
	InvoiceID     string
	InvoiceNumber string
	// Amount is the invoice's amount due, above zero.
	Amount Money
	// PaymentMethodID is the customer's default payment method as Veil
	// recorded it; "" lets the provider use the customer's own default.
	PaymentMethodID string
	// IdempotencyKey: "veil-inv-<invoice>-a<attempt>", committed with the
	// attempt before the call.
	IdempotencyKey string
}

// Validate refuses an input no provider could take.
func (in CollectInput) Validate() error {
	if in.InvoiceID == "" || in.InvoiceNumber == "" {
		return fmt.Errorf("%w: invoice id and number are required", ErrPaymentInvalid)
	}
	if in.Amount.Minor <= 0 {
		return fmt.Errorf("%w: amount %d must be above zero", ErrAmountNotRepresentable, in.Amount.Minor)
	}
	if _, err := CurrencyOf(in.Amount.Currency); err != nil {
		return fmt.Errorf("collect invoice %s: %w", in.InvoiceNumber, err)
	}
	return CheckIdempotencyKey(in.IdempotencyKey)
}

// PaymentStatus is a payment's state, the same for every provider.
type PaymentStatus string

const (
	// PaymentPending: created, waiting for money that is on its way at
	// the customer's pace (a bank transfer).
	PaymentPending PaymentStatus = "pending"
	// PaymentProcessing: submitted, the outcome comes later (a webhook).
	PaymentProcessing PaymentStatus = "processing"
	// PaymentRequiresAction: the customer must authenticate (3-D Secure);
	// off-session, that means asking them by email.
	PaymentRequiresAction PaymentStatus = "requires_action"
	// PaymentSucceeded: the money is collected.
	PaymentSucceeded PaymentStatus = "succeeded"
	// PaymentFailed: this attempt failed (declined, no payment method);
	// another attempt may succeed.
	PaymentFailed PaymentStatus = "failed"
	// PaymentCanceled: canceled before it succeeded.
	PaymentCanceled PaymentStatus = "canceled"
)

// Final says whether the status never changes again.
func (s PaymentStatus) Final() bool {
	return s == PaymentSucceeded || s == PaymentFailed || s == PaymentCanceled
}

// PaymentResult is the state of one payment attempt at the provider.
type PaymentResult struct {
	ProviderPaymentID string
	Status            PaymentStatus
	// ProviderStatus is the provider's own word, for support.
	ProviderStatus string
	Amount         Money
	// ProviderCustomerID is the customer the provider charged, which must
	// be the attempt's before its status is believed.
	ProviderCustomerID string
	// FailureCode is the provider's reason code of a failed attempt
	// ("card_declined"); DeclineCode the bank's ("insufficient_funds").
	FailureCode    string
	DeclineCode    string
	FailureMessage string
	// Instructions tell the customer how to pay (manual provider).
	Instructions *PaymentInstructions
}

// PaymentInstructions are a bank transfer's details.
type PaymentInstructions struct {
	// Reference is what the customer writes on the transfer: the invoice
	// number, by which the payee matches it.
	Reference     string
	AccountHolder string
	IBAN          string
	BIC           string
	Amount        Money
}

// RefundInput gives back Amount of a succeeded payment; Amount.Minor 0
// refunds what is left of it.
type RefundInput struct {
	ProviderPaymentID string
	Amount            Money
	Reason            string
	// RefundID is Veil's id of the refund, carried by the provider's
	// refund (Stripe's metadata[veil_refund_id]) so that its events and a
	// listing match it even before the call's answer is recorded.
	RefundID string
	// IdempotencyKey: "veil-refund-<refund id>".
	IdempotencyKey string
}

// RefundStatus is a refund's state.
type RefundStatus string

const (
	RefundPending   RefundStatus = "pending"
	RefundSucceeded RefundStatus = "succeeded"
	RefundFailed    RefundStatus = "failed"
	RefundCanceled  RefundStatus = "canceled"
)

// RefundResult is the state of a refund at the provider.
type RefundResult struct {
	ProviderRefundID string
	Status           RefundStatus
	Amount           Money
	FailureReason    string
	// RefundID is the RefundInput.RefundID the refund carries, "" for one
	// Veil did not make (a refund in the provider's dashboard).
	RefundID string
}

// RefundLister is a provider that lists a payment's refunds, so that
// reconciliation learns what became of a refund whose answer was lost
// and finds those made outside Veil.
type RefundLister interface {
	ListRefunds(ctx context.Context, providerPaymentID string) ([]RefundResult, error)
}

// WebhookEventType is a provider event, normalized.
type WebhookEventType string

const (
	WebhookPaymentSucceeded      WebhookEventType = "payment.succeeded"
	WebhookPaymentFailed         WebhookEventType = "payment.failed"
	WebhookPaymentRequiresAction WebhookEventType = "payment.requires_action"
	WebhookPaymentProcessing     WebhookEventType = "payment.processing"
	WebhookPaymentCanceled       WebhookEventType = "payment.canceled"
	// WebhookPaymentRefunded carries the payment's total refunded so far
	// (AmountRefunded), whichever refund caused it.
	WebhookPaymentRefunded WebhookEventType = "payment.refunded"
	WebhookRefundSucceeded WebhookEventType = "refund.succeeded"
	WebhookRefundFailed    WebhookEventType = "refund.failed"
	WebhookRefundPending   WebhookEventType = "refund.pending"
	WebhookDisputeOpened   WebhookEventType = "dispute.opened"
	WebhookDisputeClosed   WebhookEventType = "dispute.closed"
	// WebhookDisputeUpdated: a dispute's status changed (evidence under
	// review); its outcome comes with WebhookDisputeClosed.
	WebhookDisputeUpdated WebhookEventType = "dispute.updated"
	// WebhookPaymentMethodAttached: a payment method was attached to the
	// customer, for whatever purpose: it brings its card summary only,
	// and makes no default.
	WebhookPaymentMethodAttached WebhookEventType = "payment_method.attached"
	// WebhookPaymentMethodDefault: the method to collect with, from a
	// completed setup of Veil's or the customer's default changed at the
	// provider; applied in the order of the events' Created times.
	WebhookPaymentMethodDefault  WebhookEventType = "payment_method.default_changed"
	WebhookPaymentMethodDetached WebhookEventType = "payment_method.detached"
	// WebhookIgnored: a verified event of a type Veil does not act on.
	WebhookIgnored WebhookEventType = "ignored"
)

// WebhookEvent is a verified provider event. Only the fields its type
// concerns are set. Delivery is at least once and in any order: ID is what
// makes applying it idempotent, Created what orders it.
type WebhookEvent struct {
	Provider string
	ID       string
	Type     WebhookEventType
	// ProviderType is the provider's own type ("payment_intent.succeeded").
	ProviderType string
	Created      time.Time
	Livemode     bool

	ProviderPaymentID  string
	ProviderCustomerID string
	ProviderRefundID   string
	ProviderDisputeID  string
	PaymentMethodID    string
	// InvoiceID is Veil's invoice id as the payment carries it back.
	InvoiceID string
	// RefundID is Veil's refund id as a refund carries it back, "" for a
	// refund made outside Veil.
	RefundID string
	Amount   Money
	// AmountRefunded: the payment's total refunded (WebhookPaymentRefunded).
	AmountRefunded Money
	// Status is the refund's or dispute's own status ("won", "lost").
	Status         string
	Reason         string
	FailureCode    string
	DeclineCode    string
	FailureMessage string
	Card           *CardSummary
}

// CardSummary is all Veil keeps of a card: never its number.
type CardSummary struct {
	Brand    string
	Last4    string
	ExpMonth int
	ExpYear  int
}
