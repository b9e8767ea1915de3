package stripepay_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v85/webhook"

	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
)

const whsec = "whsec_test_veil"

var signedAt = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func webhookProvider(t *testing.T) *stripepay.Provider {
	t.Helper()
	p, err := stripepay.New(stripepay.Config{SecretKey: "sk_test_123", WebhookSecret: whsec})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// event renders a Stripe event around object, as Stripe sends it.
func event(t *testing.T, id, typ string, object map[string]any, previous map[string]any) []byte {
	t.Helper()
	data := map[string]any{"object": object}
	if previous != nil {
		data["previous_attributes"] = previous
	}
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": stripepay.APIVersion, "created": signedAt.Unix(),
		"livemode": false, "type": typ, "data": data, "pending_webhooks": 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign signs payload exactly as Stripe does.
func sign(payload []byte, secret string, at time.Time) http.Header {
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at})
	return http.Header{"Stripe-Signature": {sp.Header}}
}

func TestStripeWebhookNormalized(t *testing.T) {
	p := webhookProvider(t)
	pi := map[string]any{"id": "pi_1", "object": "payment_intent", "amount": 1250, "currency": "kwd", "customer": "cus_1",
		"payment_method": "pm_1", "status": "succeeded", "metadata": map[string]any{"veil_invoice_id": "inv-9"}}
	failed := map[string]any{"id": "pi_2", "object": "payment_intent", "amount": 4999, "currency": "eur", "status": "requires_payment_method",
		"last_payment_error": map[string]any{"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}}
	dispute := map[string]any{"id": "dp_1", "object": "dispute", "amount": 4999, "currency": "eur", "payment_intent": "pi_1", "reason": "fraudulent", "status": "needs_response"}
	refund := map[string]any{"id": "re_1", "object": "refund", "amount": 1000, "currency": "eur", "payment_intent": "pi_1", "status": "succeeded"}
	setup := map[string]any{"id": "seti_1", "object": "setup_intent", "customer": "cus_1", "status": "succeeded",
		"metadata": map[string]any{stripepay.SetupMetadataKey: "payment_method"},
		"payment_method": map[string]any{"id": "pm_9", "object": "payment_method", "type": "card",
			"card": map[string]any{"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}}}
	otherSetup := map[string]any{"id": "seti_2", "object": "setup_intent", "customer": "cus_1", "status": "succeeded", "payment_method": "pm_8"}
	attached := map[string]any{"id": "pm_7", "object": "payment_method", "type": "card", "customer": "cus_1",
		"card": map[string]any{"brand": "visa", "last4": "1881", "exp_month": 1, "exp_year": 2031}}
	customer := map[string]any{"id": "cus_1", "object": "customer", "invoice_settings": map[string]any{"default_payment_method": "pm_9"}}
	for _, tc := range []struct {
		typ      string
		object   map[string]any
		previous map[string]any
		want     metering.WebhookEvent
	}{
		{"payment_intent.succeeded", pi, nil, metering.WebhookEvent{Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: "pi_1",
			ProviderCustomerID: "cus_1", PaymentMethodID: "pm_1", InvoiceID: "inv-9", Amount: metering.Money{Minor: 1250, Currency: "KWD"}}},
		{"payment_intent.payment_failed", failed, nil, metering.WebhookEvent{Type: metering.WebhookPaymentFailed, ProviderPaymentID: "pi_2",
			Amount: metering.Money{Minor: 4999, Currency: "EUR"}, FailureCode: "card_declined", DeclineCode: "insufficient_funds",
			FailureMessage: "Your card has insufficient funds."}},
		{"charge.dispute.created", dispute, nil, metering.WebhookEvent{Type: metering.WebhookDisputeOpened, ProviderDisputeID: "dp_1",
			ProviderPaymentID: "pi_1", Amount: metering.Money{Minor: 4999, Currency: "EUR"}, Status: "needs_response", Reason: "fraudulent"}},
		{"refund.updated", refund, nil, metering.WebhookEvent{Type: metering.WebhookRefundSucceeded, ProviderRefundID: "re_1",
			ProviderPaymentID: "pi_1", Amount: metering.Money{Minor: 1000, Currency: "EUR"}, Status: "succeeded"}},
		{"setup_intent.succeeded", setup, nil, metering.WebhookEvent{Type: metering.WebhookPaymentMethodDefault, ProviderCustomerID: "cus_1",
			PaymentMethodID: "pm_9", Card: &metering.CardSummary{Brand: "visa", Last4: "4242", ExpMonth: 12, ExpYear: 2030}}},
		{"setup_intent.succeeded", otherSetup, nil, metering.WebhookEvent{Type: metering.WebhookIgnored}},
		{"payment_method.attached", attached, nil, metering.WebhookEvent{Type: metering.WebhookPaymentMethodAttached, ProviderCustomerID: "cus_1",
			PaymentMethodID: "pm_7", Card: &metering.CardSummary{Brand: "visa", Last4: "1881", ExpMonth: 1, ExpYear: 2031}}},
		{"customer.updated", customer, map[string]any{"invoice_settings": map[string]any{"default_payment_method": nil}},
			metering.WebhookEvent{Type: metering.WebhookPaymentMethodDefault, ProviderCustomerID: "cus_1", PaymentMethodID: "pm_9"}},
		{"customer.updated", customer, map[string]any{"email": "old@example.test"}, metering.WebhookEvent{Type: metering.WebhookIgnored}},
		{"charge.refunded", map[string]any{"id": "ch_1", "object": "charge", "amount": 4999, "amount_refunded": 1000, "currency": "eur", "payment_intent": "pi_1"}, nil,
			metering.WebhookEvent{Type: metering.WebhookPaymentRefunded, ProviderPaymentID: "pi_1",
				Amount: metering.Money{Minor: 4999, Currency: "EUR"}, AmountRefunded: metering.Money{Minor: 1000, Currency: "EUR"}}},
		{"payment_method.detached", map[string]any{"id": "pm_9", "object": "payment_method", "customer": nil}, map[string]any{"customer": "cus_1"},
			metering.WebhookEvent{Type: metering.WebhookPaymentMethodDetached, ProviderCustomerID: "cus_1", PaymentMethodID: "pm_9"}},
		{"invoice.created", map[string]any{"id": "in_1", "object": "invoice"}, nil, metering.WebhookEvent{Type: metering.WebhookIgnored}},
	} {
		payload := event(t, "evt_"+tc.typ, tc.typ, tc.object, tc.previous)
		got, err := p.ParseWebhook(payload, sign(payload, whsec, signedAt), signedAt.Add(time.Minute))
		if err != nil {
			t.Errorf("ParseWebhook(%s) = %v", tc.typ, err)
			continue
		}
		want := tc.want
		want.Provider, want.ID, want.ProviderType, want.Created = "stripe", "evt_"+tc.typ, tc.typ, signedAt
		gotJSON, _ := json.Marshal(got)
		wantJSON, _ := json.Marshal(want)
		if string(gotJSON) != string(wantJSON) {
			t.Errorf("ParseWebhook(%s) =\n%s\nwant\n%s", tc.typ, gotJSON, wantJSON)
		}
	}
}

func TestStripeWebhookRefused(t *testing.T) {
	p := webhookProvider(t)
	payload := event(t, "evt_1", "payment_intent.succeeded", map[string]any{"id": "pi_1", "object": "payment_intent"}, nil)
	tampered := append([]byte(nil), payload...)
	tampered[len(tampered)-2] = ' '
	other := event(t, "evt_2", "payment_intent.succeeded", map[string]any{"id": "pi_1", "object": "payment_intent"}, nil)
	var v map[string]any
	_ = json.Unmarshal(other, &v)
	v["api_version"] = "2024-06-20"
	other, _ = json.Marshal(v)
	notEvent := []byte(`{"id": "pi_1", "object": "payment_intent"}`)
	now := signedAt.Add(time.Minute)
	// A delivery signed a day ago, replayed with a fresh t= put before its
	// own: stripe-go verifies the HMAC over the last t=.
	dayOld := sign(payload, whsec, signedAt.Add(-24*time.Hour))
	freshFirst := http.Header{"Stripe-Signature": {fmt.Sprintf("t=%d,%s", signedAt.Unix(), dayOld.Get("Stripe-Signature"))}}
	for name, tc := range map[string]struct {
		payload []byte
		header  http.Header
		now     time.Time
		want    error
	}{
		"no header":                   {payload, http.Header{}, now, metering.ErrBadSignature},
		"garbage header":              {payload, http.Header{"Stripe-Signature": {"v1=zz"}}, now, metering.ErrBadSignature},
		"wrong secret":                {payload, sign(payload, "whsec_other", signedAt), now, metering.ErrBadSignature},
		"tampered payload":            {tampered, sign(payload, whsec, signedAt), now, metering.ErrBadSignature},
		"stale":                       {payload, sign(payload, whsec, signedAt), signedAt.Add(301 * time.Second), metering.ErrStaleWebhook},
		"from the future":             {payload, sign(payload, whsec, signedAt), signedAt.Add(-301 * time.Second), metering.ErrStaleWebhook},
		"not json":                    {[]byte("not json"), sign([]byte("not json"), whsec, signedAt), now, metering.ErrMalformedWebhook},
		"not an event":                {notEvent, sign(notEvent, whsec, signedAt), now, metering.ErrMalformedWebhook},
		"old api version":             {other, sign(other, whsec, signedAt), now, metering.ErrWebhookAPIVersion},
		"fresh t= beside a stale one": {payload, freshFirst, now, metering.ErrBadSignature},
	} {
		if got, err := p.ParseWebhook(tc.payload, tc.header, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("%s: ParseWebhook = %+v, %v; want %v", name, got, err, tc.want)
		}
	}
	if _, err := p.ParseWebhook(payload, sign(payload, whsec, signedAt), signedAt.Add(300*time.Second)); err != nil {
		t.Errorf("ParseWebhook at the edge of the tolerance = %v; want accepted", err)
	}
	noSecret, err := stripepay.New(stripepay.Config{SecretKey: "sk_test_123"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noSecret.ParseWebhook(payload, sign(payload, "", signedAt), now); !errors.Is(err, metering.ErrPaymentUnsupported) {
		t.Errorf("ParseWebhook without a secret configured = %v; want ErrPaymentUnsupported", err)
	}
}
