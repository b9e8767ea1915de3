package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
)

// Stripe's deliveries to a control plane without a webhook secret, or
// without Stripe, are answered 503 payments-not-configured (Stripe keeps
// retrying until it is configured), not 500, and change nothing.
func TestStripeWebhookNotConfigured(t *testing.T) {
	t.Parallel()
	for name, providers := range map[string]func(t *testing.T) map[string]metering.PaymentProvider{
		"no webhook secret": func(t *testing.T) map[string]metering.PaymentProvider {
			sp, err := stripepay.New(stripepay.Config{SecretKey: "sk_test_123"})
			if err != nil {
				t.Fatal(err)
			}
			return map[string]metering.PaymentProvider{sp.Name(): sp}
		},
		"no stripe": func(*testing.T) map[string]metering.PaymentProvider { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnvWith(t, func(cfg *httpapi.Config) {
				pays, err := payments.New(payments.Config{Pool: cfg.Pool, Logger: testenv.Logger(t), Providers: providers(t)})
				if err != nil {
					t.Fatal(err)
				}
				cfg.Payments = pays
			})
			ev := stripeEvent(t, "evt_unconfigured", "payment_intent.succeeded", map[string]any{"id": "pi_1", "object": "payment_intent"})
			status, body := e.postWebhook(ev, testWebhookSecret)
			var p struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(body, &p)
			if status != http.StatusServiceUnavailable || p.Type != "https://veil.dev/problems/payments-not-configured" {
				t.Errorf("webhook = %d %s; want 503 payments-not-configured", status, body)
			}
		})
	}
}
