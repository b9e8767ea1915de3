package main

import (
	"io"
	"strings"
	"testing"
)

// veil demo takes the Stripe webhook secret from the environment only:
// the flag is refused before anything is contacted (--events 0 stops the
// demo right after the flags otherwise).
func TestDemoWebhookSecretNotAFlag(t *testing.T) {
	err := runDemo(t.Context(), []string{"--stripe-webhook-secret", "whsec_on_the_command_line", "--events", "0"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "stripe-webhook-secret") {
		t.Errorf("veil demo --stripe-webhook-secret = %v; want the flag refused", err)
	}
}
