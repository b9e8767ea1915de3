package stripepay

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v85"
	"github.com/stripe/stripe-go/v85/webhook"

	"github.com/veil-platform/veil/metering"
)

// ParseWebhook verifies a delivery's Stripe-Signature (HMAC-SHA256 of
// "<t>.<payload>" with the endpoint secret) and that its timestamp is
// within the tolerance of now, then normalizes the event. The tolerance is
// checked here against the caller's clock rather than by stripe-go against
// the machine's, so that it is testable and the same clock as the rest of
// billing.
func (p *Provider) ParseWebhook(payload []byte, header http.Header, now time.Time) (metering.WebhookEvent, error) {
	if p.webhookSecret == "" {
		return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook: %w: no webhook secret configured", metering.ErrPaymentUnsupported)
	}
	sig := header.Get("Stripe-Signature")
	ev, err := webhook.ConstructEventWithOptions(payload, sig, p.webhookSecret, webhook.ConstructEventOptions{
		IgnoreTolerance:          true,
		IgnoreAPIVersionMismatch: true,
	})
	if err != nil {
		if errors.Is(err, webhook.ErrNotSigned) || errors.Is(err, webhook.ErrInvalidHeader) || errors.Is(err, webhook.ErrNoValidSignature) {
			return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook: %w: %v", metering.ErrBadSignature, err)
		}
		return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook: %w", metering.ErrMalformedWebhook)
	}
	// The signature is valid, so the header parses.
	signed, err := signedAt(sig)
	if err != nil {
		return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook: %w: %v", metering.ErrBadSignature, err)
	}
	if age := now.Sub(signed); age > p.tolerance || age < -p.tolerance {
		return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook: %w: signed at %s, now %s",
			metering.ErrStaleWebhook, signed.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if ev.Object != "event" || ev.ID == "" || ev.Type == "" || ev.Data == nil {
		return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook: %w: not an event", metering.ErrMalformedWebhook)
	}
	if !sameReleaseTrain(ev.APIVersion, APIVersion) {
		return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook %s: %w: %q, want the release of %s",
			ev.ID, metering.ErrWebhookAPIVersion, ev.APIVersion, APIVersion)
	}
	out, err := normalize(ev)
	if err != nil {
		return metering.WebhookEvent{}, fmt.Errorf("parse stripe webhook %s (%s): %w: %v", ev.ID, ev.Type, metering.ErrMalformedWebhook, err)
	}
	return out, nil
}

// signedAt reads the t= element of a Stripe-Signature header. A header
// with more than one is refused: stripe-go verifies the HMAC over the last
// one, so reading any other would let an old delivery pass the tolerance
// with a fresh timestamp put beside its own.
func signedAt(header string) (time.Time, error) {
	var at time.Time
	seen := false
	for _, part := range strings.Split(header, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(part), "t=")
		if !ok {
			continue
		}
		if seen {
			return time.Time{}, errors.New("read signature timestamp: more than one t=")
		}
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("read signature timestamp: %w", err)
		}
		at, seen = time.Unix(sec, 0), true
	}
	if !seen {
		return time.Time{}, errors.New("read signature timestamp: t= missing")
	}
	return at, nil
}

// sameReleaseTrain compares "2026-03-25.dahlia" by what follows the dot:
// Stripe changes objects compatibly within one release.
func sameReleaseTrain(a, b string) bool {
	_, ta, okA := strings.Cut(a, ".")
	_, tb, okB := strings.Cut(b, ".")
	return okA && okB && ta == tb
}

// normalize maps a verified Stripe event to Veil's event; a type Veil does
// not act on becomes WebhookIgnored.
func normalize(ev stripe.Event) (metering.WebhookEvent, error) {
	out := metering.WebhookEvent{
		Provider: Name, ID: ev.ID, ProviderType: string(ev.Type),
		Created: time.Unix(ev.Created, 0).UTC(), Livemode: ev.Livemode, Type: metering.WebhookIgnored,
	}
	raw := ev.Data.Raw
	var err error
	switch ev.Type {
	case "payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.requires_action",
		"payment_intent.processing", "payment_intent.canceled":
		err = paymentIntentEvent(raw, &out)
	case "charge.refunded":
		var ch stripe.Charge
		if err = json.Unmarshal(raw, &ch); err == nil {
			out.Type = metering.WebhookPaymentRefunded
			out.ProviderPaymentID = piID(ch.PaymentIntent)
			out.Amount = fromStripeAmount(ch.Amount, string(ch.Currency))
			out.AmountRefunded = fromStripeAmount(ch.AmountRefunded, string(ch.Currency))
		}
	case "refund.created", "refund.updated", "refund.failed":
		err = refundEvent(raw, &out)
	case "charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed":
		var d stripe.Dispute
		if err = json.Unmarshal(raw, &d); err == nil {
			out.Type = map[stripe.EventType]metering.WebhookEventType{
				"charge.dispute.created": metering.WebhookDisputeOpened,
				"charge.dispute.updated": metering.WebhookDisputeUpdated,
				"charge.dispute.closed":  metering.WebhookDisputeClosed,
			}[ev.Type]
			out.ProviderDisputeID, out.ProviderPaymentID = d.ID, piID(d.PaymentIntent)
			out.Amount = fromStripeAmount(d.Amount, string(d.Currency))
			out.Status, out.Reason = string(d.Status), string(d.Reason)
		}
	case "setup_intent.succeeded", "payment_method.attached", "payment_method.detached", "customer.updated":
		err = paymentMethodEvent(ev, &out)
	}
	return out, err
}

func paymentIntentEvent(raw json.RawMessage, out *metering.WebhookEvent) error {
	var pi stripe.PaymentIntent
	if err := json.Unmarshal(raw, &pi); err != nil {
		return err
	}
	out.Type = map[string]metering.WebhookEventType{
		"payment_intent.succeeded":       metering.WebhookPaymentSucceeded,
		"payment_intent.payment_failed":  metering.WebhookPaymentFailed,
		"payment_intent.requires_action": metering.WebhookPaymentRequiresAction,
		"payment_intent.processing":      metering.WebhookPaymentProcessing,
		"payment_intent.canceled":        metering.WebhookPaymentCanceled,
	}[out.ProviderType]
	r := paymentResult(&pi)
	out.ProviderPaymentID, out.Amount = pi.ID, r.Amount
	out.FailureCode, out.DeclineCode, out.FailureMessage = r.FailureCode, r.DeclineCode, r.FailureMessage
	out.ProviderCustomerID = customerID(pi.Customer)
	if pi.PaymentMethod != nil {
		out.PaymentMethodID = pi.PaymentMethod.ID
	}
	out.InvoiceID = pi.Metadata["veil_invoice_id"]
	return nil
}

func refundEvent(raw json.RawMessage, out *metering.WebhookEvent) error {
	var rf stripe.Refund
	if err := json.Unmarshal(raw, &rf); err != nil {
		return err
	}
	switch refundStatus(rf.Status) {
	case metering.RefundSucceeded:
		out.Type = metering.WebhookRefundSucceeded
	case metering.RefundFailed, metering.RefundCanceled:
		out.Type = metering.WebhookRefundFailed
	default:
		out.Type = metering.WebhookRefundPending
	}
	out.ProviderRefundID, out.ProviderPaymentID = rf.ID, piID(rf.PaymentIntent)
	out.RefundID = rf.Metadata["veil_refund_id"]
	out.Amount = fromStripeAmount(rf.Amount, string(rf.Currency))
	out.Status, out.Reason = string(rf.Status), string(rf.FailureReason)
	return nil
}

// paymentMethodEvent: only a completed SetupIntent of Veil's (its
// metadata says so) and a changed default of the customer
// (customer.updated) name the method to collect with; an attached method
// only brings its card summary, as it may have been attached for anything
// else. The event's created time orders them (metering.WebhookEvent).
func paymentMethodEvent(ev stripe.Event, out *metering.WebhookEvent) error {
	raw := ev.Data.Raw
	switch ev.Type {
	case "setup_intent.succeeded":
		var si stripe.SetupIntent
		if err := json.Unmarshal(raw, &si); err != nil {
			return err
		}
		if si.Metadata[SetupMetadataKey] == "" {
			return nil
		}
		out.Type, out.ProviderCustomerID = metering.WebhookPaymentMethodDefault, customerID(si.Customer)
		if si.PaymentMethod != nil {
			out.PaymentMethodID, out.Card = si.PaymentMethod.ID, card(si.PaymentMethod)
		}
	case "payment_method.attached", "payment_method.detached":
		var pm stripe.PaymentMethod
		if err := json.Unmarshal(raw, &pm); err != nil {
			return err
		}
		out.Type, out.PaymentMethodID, out.Card = metering.WebhookPaymentMethodAttached, pm.ID, card(&pm)
		out.ProviderCustomerID = customerID(pm.Customer)
		if ev.Type == "payment_method.detached" {
			out.Type = metering.WebhookPaymentMethodDetached
			// Detached, the method has no customer any more; the
			// previous one is in previous_attributes.
			if c, ok := ev.Data.PreviousAttributes["customer"].(string); ok {
				out.ProviderCustomerID = c
			}
		}
	case "customer.updated":
		if _, changed := ev.Data.PreviousAttributes["invoice_settings"]; !changed {
			return nil
		}
		var c stripe.Customer
		if err := json.Unmarshal(raw, &c); err != nil {
			return err
		}
		out.Type, out.ProviderCustomerID = metering.WebhookPaymentMethodDefault, c.ID
		if c.InvoiceSettings != nil && c.InvoiceSettings.DefaultPaymentMethod != nil {
			out.PaymentMethodID = c.InvoiceSettings.DefaultPaymentMethod.ID
		}
	}
	return nil
}

func card(pm *stripe.PaymentMethod) *metering.CardSummary {
	if pm == nil || pm.Card == nil {
		return nil
	}
	return &metering.CardSummary{
		Brand: string(pm.Card.Brand), Last4: pm.Card.Last4,
		ExpMonth: int(pm.Card.ExpMonth), ExpYear: int(pm.Card.ExpYear),
	}
}

// piID and customerID return the id of an expandable reference, "" when
// the event has none.
func piID(pi *stripe.PaymentIntent) string {
	if pi == nil {
		return ""
	}
	return pi.ID
}

func customerID(c *stripe.Customer) string {
	if c == nil {
		return ""
	}
	return c.ID
}
