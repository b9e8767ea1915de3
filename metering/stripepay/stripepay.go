// Package stripepay is the Stripe implementation of
// metering.PaymentProvider, on stripe-go: customers with the billing
// profile, SetupIntents for off-session use, PaymentIntents confirmed
// off-session with the customer's default payment method, refunds, and
// webhooks verified with Stripe's signature scheme and normalized.
//
// Every POST carries the caller's idempotency key (stripe-go would
// otherwise invent a random one, lost in a crash). Webhook endpoints must
// be created at Stripe with api_version = APIVersion (the version stripe-go
// reads): an event of another release train is refused
// (metering.ErrWebhookAPIVersion) rather than read with missing fields.
package stripepay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v85"

	"github.com/veil-platform/veil/metering"
)

// Name is the provider's name.
const Name = "stripe"

// APIVersion is the Stripe API version requests are made in and webhook
// events must be rendered in.
const APIVersion = stripe.APIVersion

// DefaultWebhookTolerance is how far a webhook's signed timestamp may be
// from now: Stripe's own default.
const DefaultWebhookTolerance = 300 * time.Second

// Config configures a Provider. Neither secret is ever logged, returned in
// an error or meant to be stored in a database.
type Config struct {
	// SecretKey is the API key (sk_test_… or sk_live_…, or a restricted
	// rk_… key). Required.
	SecretKey string
	// WebhookSecret is the endpoint's signing secret (whsec_…). Empty
	// refuses every webhook.
	WebhookSecret string
	// APIBase is the API's base URL; empty means Stripe
	// (https://api.stripe.com). Tests point it at stripe-mock or a fake.
	APIBase string
	// HTTPClient makes the calls; default a client with a 30 s timeout.
	HTTPClient *http.Client
	// NetworkRetries is how many times stripe-go repeats a call that failed
	// on the network, with the same idempotency key. Default 0: the
	// caller's job retries with backoff, so a call returns quickly.
	NetworkRetries int64
	// WebhookTolerance bounds a webhook's age; default 300 s.
	WebhookTolerance time.Duration
	// Logger receives stripe-go's lines, redacted; default discards.
	Logger *slog.Logger
}

// Provider is Stripe as a metering.PaymentProvider.
type Provider struct {
	sc            *stripe.Client
	webhookSecret string
	tolerance     time.Duration
}

var _ metering.PaymentProvider = (*Provider)(nil)

// New returns a Provider for cfg.
func New(cfg Config) (*Provider, error) {
	if cfg.SecretKey == "" {
		return nil, errors.New("create stripe provider: secret key missing")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.WebhookTolerance <= 0 {
		cfg.WebhookTolerance = DefaultWebhookTolerance
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        cfg.HTTPClient,
		LeveledLogger:     leveledLogger{cfg.Logger},
		MaxNetworkRetries: stripe.Int64(cfg.NetworkRetries),
		EnableTelemetry:   stripe.Bool(false),
	}
	if cfg.APIBase != "" {
		bc.URL = stripe.String(strings.TrimRight(cfg.APIBase, "/"))
	}
	sc := stripe.NewClient(cfg.SecretKey, stripe.WithBackends(stripe.NewBackendsWithConfig(bc)))
	return &Provider{sc: sc, webhookSecret: cfg.WebhookSecret, tolerance: cfg.WebhookTolerance}, nil
}

// Name implements metering.PaymentProvider.
func (p *Provider) Name() string { return Name }

// EnsureCustomer creates or updates the Stripe customer. The tax id goes
// into metadata, not Stripe's tax ids, which want a type per country and
// validate it: Veil's own invoices carry the tax id, Stripe does not issue
// them.
func (p *Provider) EnsureCustomer(ctx context.Context, in metering.CustomerInput) (metering.CustomerRef, error) {
	if err := in.Validate(); err != nil {
		return metering.CustomerRef{}, fmt.Errorf("ensure stripe customer: %w", err)
	}
	meta := map[string]string{"veil_customer_id": in.CustomerID}
	if in.TaxID != "" {
		meta["veil_tax_id"] = in.TaxID
	}
	var addr *stripe.AddressParams
	if a := in.Address; a != (metering.Address{}) {
		addr = &stripe.AddressParams{
			Line1: stripe.String(a.Line1), Line2: stripe.String(a.Line2), PostalCode: stripe.String(a.PostalCode),
			City: stripe.String(a.City), State: stripe.String(a.State), Country: stripe.String(a.Country),
		}
	}
	var (
		c   *stripe.Customer
		err error
	)
	if in.Ref.ID == "" {
		params := &stripe.CustomerCreateParams{Name: optional(in.Name), Email: optional(in.Email), Address: addr, Metadata: meta}
		params.SetIdempotencyKey(in.IdempotencyKey)
		c, err = p.sc.V1Customers.Create(ctx, params)
	} else {
		params := &stripe.CustomerUpdateParams{Name: optional(in.Name), Email: optional(in.Email), Address: addr, Metadata: meta}
		params.SetIdempotencyKey(in.IdempotencyKey)
		c, err = p.sc.V1Customers.Update(ctx, in.Ref.ID, params)
	}
	if err != nil {
		return metering.CustomerRef{}, providerError("ensure customer", err)
	}
	return metering.CustomerRef{Provider: Name, ID: c.ID}, nil
}

// SetupPaymentMethod creates a SetupIntent for off-session use; its client
// secret is what the portal's Stripe.js needs.
func (p *Provider) SetupPaymentMethod(ctx context.Context, in metering.SetupInput) (metering.SetupSession, error) {
	if in.Customer.ID == "" {
		return metering.SetupSession{}, fmt.Errorf("set up payment method: %w: customer missing", metering.ErrPaymentInvalid)
	}
	if err := metering.CheckIdempotencyKey(in.IdempotencyKey); err != nil {
		return metering.SetupSession{}, fmt.Errorf("set up payment method: %w", err)
	}
	params := &stripe.SetupIntentCreateParams{
		Customer: stripe.String(in.Customer.ID),
		Usage:    stripe.String(string(stripe.SetupIntentUsageOffSession)),
	}
	params.AddMetadata(SetupMetadataKey, "payment_method")
	params.SetIdempotencyKey(in.IdempotencyKey)
	si, err := p.sc.V1SetupIntents.Create(ctx, params)
	if err != nil {
		return metering.SetupSession{}, providerError("set up payment method", err)
	}
	return metering.SetupSession{ProviderID: si.ID, ClientSecret: si.ClientSecret}, nil
}

// SetupMetadataKey marks Veil's SetupIntents: only their success makes
// their method the customer's default.
const SetupMetadataKey = "veil_setup"

// Collect creates and confirms a PaymentIntent off-session. A decline is
// Stripe's 402 card_error carrying the PaymentIntent: a failed attempt,
// returned as a result. Stripe replays the recorded answer to a repeated
// key, the 402 included, so a retried call never charges twice.
func (p *Provider) Collect(ctx context.Context, in metering.CollectInput) (metering.PaymentResult, error) {
	if err := in.Validate(); err != nil {
		return metering.PaymentResult{}, fmt.Errorf("collect with stripe: %w", err)
	}
	amount, currency, err := toStripeAmount(in.Amount)
	if err != nil {
		return metering.PaymentResult{}, fmt.Errorf("collect invoice %s: %w", in.InvoiceNumber, err)
	}
	// Veil's payments store the method with the key and never send ""
	// (the default read here at call time could change under the key);
	// other callers get the customer's default.
	pm := in.PaymentMethodID
	if pm == "" {
		if pm, err = p.defaultPaymentMethod(ctx, in.Customer.ID); err != nil {
			return metering.PaymentResult{}, err
		}
		if pm == "" {
			return metering.PaymentResult{
				Status: metering.PaymentFailed, Amount: in.Amount,
				FailureCode: "no_payment_method", FailureMessage: "the customer has no default payment method",
			}, nil
		}
	}
	params := &stripe.PaymentIntentCreateParams{
		Amount:        stripe.Int64(amount),
		Currency:      stripe.String(currency),
		Customer:      stripe.String(in.Customer.ID),
		PaymentMethod: stripe.String(pm),
		Confirm:       stripe.Bool(true),
		OffSession:    stripe.Bool(true),
		Description:   stripe.String("Invoice " + in.InvoiceNumber),
		Metadata: map[string]string{"veil_invoice_id": in.InvoiceID, "veil_invoice_number": in.InvoiceNumber,
			"veil_idempotency_key": in.IdempotencyKey},
		// Off-session there is nobody to follow a redirect.
		AutomaticPaymentMethods: &stripe.PaymentIntentCreateAutomaticPaymentMethodsParams{
			Enabled:        stripe.Bool(true),
			AllowRedirects: stripe.String("never"),
		},
	}
	params.SetIdempotencyKey(in.IdempotencyKey)
	pi, err := p.sc.V1PaymentIntents.Create(ctx, params)
	if err != nil {
		var se *stripe.Error
		if errors.As(err, &se) && se.Type == stripe.ErrorTypeCard {
			return declined(se, in.Amount), nil
		}
		return metering.PaymentResult{}, providerError("collect invoice "+in.InvoiceNumber, err)
	}
	return paymentResult(pi), nil
}

// DefaultPaymentMethod reads a customer's default payment method at
// Stripe ("" when none), for a caller that stores it with its attempt.
func (p *Provider) DefaultPaymentMethod(ctx context.Context, customer string) (string, error) {
	return p.defaultPaymentMethod(ctx, customer)
}

// FindPayment looks up the PaymentIntent a Collect with this invoice and
// idempotency key created, by the metadata Collect gives it, for a call
// whose answer was lost or whose key Stripe may have forgotten; none is
// ErrPaymentNotFound. Stripe's search lags writes by up to a minute.
func (p *Provider) FindPayment(ctx context.Context, invoiceID, idempotencyKey string) (metering.PaymentResult, error) {
	if !searchable(invoiceID) || !searchable(idempotencyKey) {
		return metering.PaymentResult{}, fmt.Errorf("find payment: %w: invoice or key not searchable", metering.ErrPaymentInvalid)
	}
	params := &stripe.PaymentIntentSearchParams{}
	params.Query = fmt.Sprintf("metadata['veil_invoice_id']:'%s'", invoiceID)
	for pi, err := range p.sc.V1PaymentIntents.Search(ctx, params).All(ctx) {
		if err != nil {
			return metering.PaymentResult{}, providerError("find payment", err)
		}
		if pi.Metadata["veil_idempotency_key"] == idempotencyKey {
			return paymentResult(pi), nil
		}
	}
	return metering.PaymentResult{}, fmt.Errorf("find payment %s: %w", idempotencyKey, metering.ErrPaymentNotFound)
}

// searchable refuses what would break out of a search query's quotes.
func searchable(s string) bool {
	return s != "" && len(s) <= 255 && !strings.ContainsAny(s, `'\`)
}

func (p *Provider) defaultPaymentMethod(ctx context.Context, customer string) (string, error) {
	c, err := p.sc.V1Customers.Retrieve(ctx, customer, nil)
	if err != nil {
		return "", providerError("read customer", err)
	}
	if c.InvoiceSettings == nil || c.InvoiceSettings.DefaultPaymentMethod == nil {
		return "", nil
	}
	return c.InvoiceSettings.DefaultPaymentMethod.ID, nil
}

// declined is the failed attempt of a card error.
func declined(se *stripe.Error, amount metering.Money) metering.PaymentResult {
	r := metering.PaymentResult{Status: metering.PaymentFailed, Amount: amount}
	if se.PaymentIntent != nil {
		r = paymentResult(se.PaymentIntent)
		r.Status = metering.PaymentFailed
	}
	r.FailureCode = string(se.Code)
	r.DeclineCode = string(se.DeclineCode)
	r.FailureMessage = redact(se.Msg)
	return r
}

// PaymentStatus retrieves a PaymentIntent.
func (p *Provider) PaymentStatus(ctx context.Context, id string) (metering.PaymentResult, error) {
	if id == "" {
		return metering.PaymentResult{}, fmt.Errorf("read payment: %w: id missing", metering.ErrPaymentInvalid)
	}
	pi, err := p.sc.V1PaymentIntents.Retrieve(ctx, id, nil)
	if err != nil {
		return metering.PaymentResult{}, providerError("read payment", err)
	}
	return paymentResult(pi), nil
}

// CancelPayment cancels a PaymentIntent; one already canceled is not an
// error, so that a repeated void does not fail.
func (p *Provider) CancelPayment(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("cancel payment: %w: id missing", metering.ErrPaymentInvalid)
	}
	params := &stripe.PaymentIntentCancelParams{}
	params.SetIdempotencyKey("veil-cancel-" + id)
	_, err := p.sc.V1PaymentIntents.Cancel(ctx, id, params)
	if err == nil {
		return nil
	}
	var se *stripe.Error
	if errors.As(err, &se) && se.Code == stripe.ErrorCodePaymentIntentUnexpectedState {
		if r, rerr := p.PaymentStatus(ctx, id); rerr == nil && r.Status == metering.PaymentCanceled {
			return nil
		}
	}
	return providerError("cancel payment", err)
}

// Refund refunds a PaymentIntent, in full when in.Amount.Minor is 0.
func (p *Provider) Refund(ctx context.Context, in metering.RefundInput) (metering.RefundResult, error) {
	if in.ProviderPaymentID == "" {
		return metering.RefundResult{}, fmt.Errorf("refund payment: %w: payment missing", metering.ErrPaymentInvalid)
	}
	if err := metering.CheckIdempotencyKey(in.IdempotencyKey); err != nil {
		return metering.RefundResult{}, fmt.Errorf("refund payment: %w", err)
	}
	params := &stripe.RefundCreateParams{PaymentIntent: stripe.String(in.ProviderPaymentID)}
	if in.Amount.Minor != 0 {
		amount, _, err := toStripeAmount(in.Amount)
		if err != nil {
			return metering.RefundResult{}, fmt.Errorf("refund payment %s: %w", in.ProviderPaymentID, err)
		}
		params.Amount = stripe.Int64(amount)
	}
	params.Metadata = map[string]string{}
	if in.RefundID != "" {
		params.Metadata["veil_refund_id"] = in.RefundID
	}
	if in.Reason != "" {
		params.Metadata["veil_reason"] = in.Reason
	}
	params.SetIdempotencyKey(in.IdempotencyKey)
	rf, err := p.sc.V1Refunds.Create(ctx, params)
	if err != nil {
		return metering.RefundResult{}, providerError("refund payment "+in.ProviderPaymentID, err)
	}
	return refundResult(rf), nil
}

// ListRefunds lists every refund of a PaymentIntent, page after page.
func (p *Provider) ListRefunds(ctx context.Context, providerPaymentID string) ([]metering.RefundResult, error) {
	if providerPaymentID == "" {
		return nil, fmt.Errorf("list refunds: %w: payment missing", metering.ErrPaymentInvalid)
	}
	params := &stripe.RefundListParams{PaymentIntent: stripe.String(providerPaymentID)}
	params.Limit = stripe.Int64(100)
	var out []metering.RefundResult
	for rf, err := range p.sc.V1Refunds.List(ctx, params).All(ctx) {
		if err != nil {
			return nil, providerError("list refunds of "+providerPaymentID, err)
		}
		out = append(out, refundResult(rf))
	}
	return out, nil
}

func refundResult(rf *stripe.Refund) metering.RefundResult {
	return metering.RefundResult{
		ProviderRefundID: rf.ID,
		Status:           refundStatus(rf.Status),
		Amount:           fromStripeAmount(rf.Amount, string(rf.Currency)),
		FailureReason:    string(rf.FailureReason),
		RefundID:         rf.Metadata["veil_refund_id"],
	}
}

// paymentResult normalizes a PaymentIntent. Veil confirms every
// PaymentIntent when it creates it, so one that still wants a payment
// method or a confirmation has failed.
func paymentResult(pi *stripe.PaymentIntent) metering.PaymentResult {
	r := metering.PaymentResult{
		ProviderPaymentID:  pi.ID,
		ProviderStatus:     string(pi.Status),
		Amount:             fromStripeAmount(pi.Amount, string(pi.Currency)),
		ProviderCustomerID: customerID(pi.Customer),
	}
	switch pi.Status {
	case stripe.PaymentIntentStatusSucceeded:
		r.Status = metering.PaymentSucceeded
	case stripe.PaymentIntentStatusProcessing, stripe.PaymentIntentStatusRequiresCapture:
		r.Status = metering.PaymentProcessing
	case stripe.PaymentIntentStatusRequiresAction:
		r.Status = metering.PaymentRequiresAction
	case stripe.PaymentIntentStatusCanceled:
		r.Status = metering.PaymentCanceled
	default:
		r.Status = metering.PaymentFailed
	}
	if e := pi.LastPaymentError; e != nil {
		r.FailureCode, r.DeclineCode, r.FailureMessage = string(e.Code), string(e.DeclineCode), redact(e.Msg)
	}
	return r
}

func refundStatus(s stripe.RefundStatus) metering.RefundStatus {
	switch s {
	case stripe.RefundStatusSucceeded:
		return metering.RefundSucceeded
	case stripe.RefundStatusFailed:
		return metering.RefundFailed
	case stripe.RefundStatusCanceled:
		return metering.RefundCanceled
	default:
		return metering.RefundPending
	}
}

// providerError classifies a stripe-go error. A *stripe.Error's own
// Error() is its JSON, which may hold a PaymentIntent and its client
// secret, so only chosen fields are kept, redacted.
func providerError(op string, err error) error {
	pe := &metering.ProviderError{Provider: Name, Op: op}
	var se *stripe.Error
	if !errors.As(err, &se) {
		// Not an answer from Stripe: the network, a timeout, a canceled
		// context. Whether Stripe acted is unknown; the same key tells.
		pe.Kind, pe.Message = metering.ErrPaymentRetryable, redact(err.Error())
		return pe
	}
	pe.HTTPStatus, pe.Code, pe.RequestID, pe.Message = se.HTTPStatusCode, string(se.Code), se.RequestID, redact(se.Msg)
	switch {
	case se.Type == stripe.ErrorTypeIdempotency:
		pe.Kind = metering.ErrIdempotencyConflict
	case se.HTTPStatusCode == http.StatusTooManyRequests, se.HTTPStatusCode == http.StatusConflict,
		se.HTTPStatusCode >= 500, se.Type == stripe.ErrorTypeAPI:
		pe.Kind = metering.ErrPaymentRetryable
	case se.HTTPStatusCode == http.StatusUnauthorized, se.HTTPStatusCode == http.StatusForbidden:
		pe.Kind = metering.ErrPaymentAuth
	case se.HTTPStatusCode == http.StatusNotFound, se.Code == stripe.ErrorCodeResourceMissing:
		pe.Kind = metering.ErrPaymentNotFound
	default:
		pe.Kind = metering.ErrPaymentInvalid
	}
	return pe
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return stripe.String(s)
}
