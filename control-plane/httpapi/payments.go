package httpapi

import (
	"errors"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// maxWebhookBody bounds a provider's webhook delivery: Stripe's events are
// a few KiB, and the whole body must be read to check its signature.
const maxWebhookBody = 1 << 20

// paymentRoutes: an invoice's payment and its attempts, refunds, a
// payment marked by hand, and the setup of a payment method. Who may call
// what is the payments service's rule.
func (a *api) paymentRoutes(r chi.Router) {
	r.Get(idPath("/v1/invoices/{id}/payment"), a.paymentsHandle(a.invoicePayment))
	r.Post(idPath("/v1/invoices/{id}/refunds"), a.paymentsHandle(a.refundInvoice))
	r.Post(idPath("/v1/invoices/{id}/payment/mark-paid"), a.paymentsHandle(a.markPaymentPaid))
	r.With(a.paymentLimit()).Post(idPath("/v1/invoices/{id}/payment/retry"), a.paymentsHandle(a.retryPayment))
	r.With(a.paymentLimit()).Post("/v1/billing/payment-methods/setup", a.paymentsHandle(a.setupPaymentMethod))
}

// adminPaymentRoutes are under /v1/admin: an issuer's payment settings.
func (a *api) adminPaymentRoutes(r chi.Router) {
	r.Put(idPath("/organizations/{id}/payment-settings"), a.paymentsHandle(a.putPaymentSettings))
}

func (a *api) invoicePayment(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	p, attempts, err := a.cfg.Payments.Attempts(r.Context(), actorFrom(r), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p.JSON(attempts))
	return nil
}

type refundJSON struct {
	ID          string `json:"id"`
	InvoiceID   string `json:"invoice_id"`
	Currency    string `json:"currency"`
	Amount      string `json:"amount"`
	Reason      string `json:"reason"`
	Status      string `json:"status"`
	Destination string `json:"destination"`
}

func (a *api) refundInvoice(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in struct {
		Amount      *decimal.Decimal `json:"amount"`
		Reason      string           `json:"reason"`
		Destination string           `json:"destination"`
	}
	if err := decodeOptional(r, &in); err != nil {
		return err
	}
	var v validation.Error
	if in.Amount != nil && !in.Amount.IsPositive() {
		v.Add("amount", "must be above zero; leave it out to refund what is left")
	}
	refund := a.cfg.Payments.Refund
	switch in.Destination {
	case "", payments.DestinationPaymentMethod:
	case payments.DestinationCreditBalance:
		refund = a.cfg.Payments.RefundToCredit
	default:
		v.Add("destination", "must be payment_method or credit_balance")
	}
	if len(in.Reason) > 500 {
		v.Add("reason", "must be at most 500 bytes")
	}
	if err := v.Err(); err != nil {
		return err
	}
	amount := decimal.Zero
	if in.Amount != nil {
		amount = *in.Amount
	}
	rf, err := refund(r.Context(), actorFrom(r), id, amount, in.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, refundJSON{ID: rf.ID.String(), InvoiceID: rf.InvoiceID.String(), Currency: rf.Amount.Currency,
		Amount: money(rf.Amount.Currency, rf.Amount.Decimal()), Reason: rf.Reason, Status: rf.Status, Destination: rf.Destination})
	return nil
}

func (a *api) markPaymentPaid(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in struct {
		Reference string `json:"reference"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Reference == "" || len(in.Reference) > 200 {
		return validation.One("reference", "must be 1 to 200 bytes: the transfer's reference")
	}
	p, err := a.cfg.Payments.MarkPaidManually(r.Context(), actorFrom(r), id, in.Reference)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.withAttempts(r, p))
	return nil
}

// withAttempts is the answer of a call that changed the payment: the
// payment as it is now, with its attempts. Money may have moved already,
// so a failure to read them answers the payment the call returned rather
// than an error the client might take for nothing done.
func (a *api) withAttempts(r *http.Request, p payments.Payment) payments.PaymentJSON {
	now, attempts, err := a.cfg.Payments.Attempts(r.Context(), actorFrom(r), p.InvoiceID)
	if err != nil {
		return p.JSON(nil)
	}
	return now.JSON(attempts)
}

// retryPayment is pay now: a new attempt at once, for the customer's
// members and the issuer's providers and admins.
func (a *api) retryPayment(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	p, err := a.cfg.Payments.PayNow(r.Context(), actorFrom(r), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.withAttempts(r, p))
	return nil
}

// setupPaymentMethod answers the client secret of a new setup: it is the
// caller's to hand to the provider's script, and no cache may keep it.
func (a *api) setupPaymentMethod(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Provider *string `json:"provider"`
	}
	if err := decodeOptional(r, &in); err != nil {
		return err
	}
	// Left out, it is Stripe; given, it must be one of the providers.
	provider := "stripe"
	if in.Provider != nil {
		provider = *in.Provider
	}
	if provider != "stripe" && provider != "manual" {
		return validation.One("provider", "must be stripe or manual")
	}
	out, err := a.cfg.Payments.SetupPaymentMethod(r.Context(), actorFrom(r), provider)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) putPaymentSettings(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var in struct {
		Provider  string  `json:"provider"`
		RetryDays []int32 `json:"retry_days"`
		GraceDays *int32  `json:"grace_days"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	var v validation.Error
	if in.Provider != "stripe" && in.Provider != "manual" {
		v.Add("provider", "must be stripe or manual")
	}
	if len(in.RetryDays) > 20 {
		v.Add("retry_days", "at most 20 retries")
	}
	for i, d := range in.RetryDays {
		if d < 1 || d > 365 {
			v.Add("retry_days", "each must be 1 to 365 days")
			break
		}
		if i > 0 && d <= in.RetryDays[i-1] {
			v.Add("retry_days", "must be strictly ascending: each counts from the first failure")
			break
		}
	}
	grace := int32(3)
	if in.GraceDays != nil {
		grace = *in.GraceDays
	}
	if grace < 0 || grace > payments.MaxGraceDays {
		v.Add("grace_days", "must be 0 to %d", payments.MaxGraceDays)
	}
	if err := v.Err(); err != nil {
		return err
	}
	st, err := a.cfg.Payments.PutSettings(r.Context(), actorFrom(r), id, payments.Settings{Provider: in.Provider, RetryDays: in.RetryDays, GraceDays: grace})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"organization_id": id, "provider": st.Provider, "retry_days": st.RetryDays, "grace_days": st.GraceDays})
	return nil
}

// stripeWebhook receives Stripe's deliveries, without a bearer token: the
// signature is the authentication. It answers 2xx only once the event is
// applied and committed (or known already), so that Stripe delivers
// again whatever failed.
func (a *api) stripeWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
	if err == nil && len(body) > maxWebhookBody {
		err = errTooLarge
	}
	if err == nil {
		_, err = a.cfg.Payments.Webhook(r.Context(), "stripe", body, r.Header)
	}
	// Stripe, or its webhook secret, not configured here: 503, which Stripe
	// retries for days, until it is.
	if errors.Is(err, metering.ErrPaymentUnsupported) || errors.Is(err, payments.ErrNotConfigured) {
		w.Header().Set("Retry-After", "3600")
		problem.Write(w, problem.New(http.StatusServiceUnavailable, "payments-not-configured", "Payments Not Configured",
			"Stripe webhooks are not configured on this control plane (VEIL_STRIPE_SECRET_KEY, VEIL_STRIPE_WEBHOOK_SECRET)"))
		return
	}
	if err != nil {
		a.paymentsProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"received": true})
}

// paymentsProblem answers a payments error; any other goes to fail.
func (a *api) paymentsProblem(w http.ResponseWriter, r *http.Request, err error) {
	var d problem.Details
	switch {
	case errors.Is(err, payments.ErrNotFound):
		d = problem.New(http.StatusNotFound, "not-found", "Not Found", err.Error())
	case errors.Is(err, metering.ErrBadSignature), errors.Is(err, metering.ErrStaleWebhook),
		errors.Is(err, metering.ErrMalformedWebhook), errors.Is(err, metering.ErrWebhookAPIVersion):
		d = problem.New(http.StatusBadRequest, "invalid-webhook", "Invalid Webhook", err.Error())
	case errors.Is(err, payments.ErrNotConfigured), errors.Is(err, payments.ErrNoPaymentCustomer):
		d = problem.New(http.StatusConflict, "payments-not-configured", "Payments Not Configured", err.Error())
	case errors.Is(err, payments.ErrNotPaid), errors.Is(err, payments.ErrPaymentState), errors.Is(err, payments.ErrInvoiceState):
		d = problem.New(http.StatusConflict, "invalid-transition", "Invalid State Transition", err.Error())
	case errors.Is(err, payments.ErrInFlight):
		d = problem.New(http.StatusConflict, "payment-in-flight", "Payment Attempt Under Way", err.Error())
	case errors.Is(err, payments.ErrOverRefund):
		d = problem.New(http.StatusConflict, "over-refund", "Refund Exceeds Payment", err.Error())
	case errors.Is(err, payments.ErrInvalid):
		d = problem.New(http.StatusUnprocessableEntity, "validation", "Invalid Request", err.Error())
	case errors.Is(err, metering.ErrPaymentRetryable):
		w.Header().Set("Retry-After", "30")
		d = problem.New(http.StatusServiceUnavailable, "payment-provider-unavailable", "Payment Provider Unavailable", err.Error())
	case errors.As(err, new(*metering.ProviderError)):
		d = problem.New(http.StatusBadGateway, "payment-provider-error", "Payment Provider Error", err.Error())
	default:
		a.fail(w, r, err)
		return
	}
	d.Instance = r.URL.Path
	problem.Write(w, d.With("request_id", middleware.RequestIDFrom(r.Context())))
}

// paymentsHandle is handle for the payments routes.
func (a *api) paymentsHandle(fn handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			a.paymentsProblem(w, r, err)
		}
	}
}
