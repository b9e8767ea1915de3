package main

import (
	"io"
	"os"
	"testing"
)

// TestDevStripeDefaults: veil dev without a Stripe key collects through
// stripe-mock with its test key and the dev webhook secret; a key of
// one's own (or an API base) is left as it is, and never gets the dev
// webhook secret.
func TestDevStripeDefaults(t *testing.T) {
	for _, tc := range []struct {
		name                string
		env                 map[string]string
		key, base, whsec    string
		wantBase, wantWhere string
	}{
		{"none set", nil, DevStripeSecretKey, DevStripeAPIBase, DevStripeWebhookSecret, DevStripeAPIBase,
			"stripe-mock's test key; webhooks signed with " + DevStripeWebhookSecret},
		{"another mock", map[string]string{"VEIL_STRIPE_API_BASE": "http://127.0.0.1:9999"},
			DevStripeSecretKey, "http://127.0.0.1:9999", DevStripeWebhookSecret, "http://127.0.0.1:9999",
			"stripe-mock's test key; webhooks signed with " + DevStripeWebhookSecret},
		{"own test key", map[string]string{"VEIL_STRIPE_SECRET_KEY": "sk_test_own"}, "sk_test_own", "", "",
			"https://api.stripe.com", "a key of your own"},
		{"own live key", map[string]string{"VEIL_STRIPE_SECRET_KEY": "sk_live_own", "VEIL_STRIPE_WEBHOOK_SECRET": "whsec_own"},
			"sk_live_own", "", "whsec_own", "https://api.stripe.com", "a live key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"VEIL_STRIPE_SECRET_KEY", "VEIL_STRIPE_API_BASE", "VEIL_STRIPE_WEBHOOK_SECRET"} {
				t.Setenv(k, tc.env[k])
				if tc.env[k] == "" {
					os.Unsetenv(k)
				}
			}
			var d devFlags
			f := newFlags("dev", "", io.Discard)
			d.register(f)
			if err := f.Parse([]string{"--data-dir", t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.applyDefaults(); err != nil {
				t.Fatal(err)
			}
			pay := d.cp.payments
			if pay.stripeSecretKey != tc.key || pay.stripeAPIBase != tc.base || pay.stripeWebhookSecret != tc.whsec {
				t.Errorf("key %q, base %q, webhook secret %q; want %q, %q, %q", pay.stripeSecretKey, pay.stripeAPIBase,
					pay.stripeWebhookSecret, tc.key, tc.base, tc.whsec)
			}
			if base, where := stripeWhere(pay); base != tc.wantBase || where != tc.wantWhere {
				t.Errorf("stripeWhere = %q, %q; want %q, %q", base, where, tc.wantBase, tc.wantWhere)
			}
		})
	}
}
