package testenv

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// StripeMockServer is stripe-mock, Stripe's API mock (started by
// deploy/local/services.sh up): it validates each request against Stripe's
// OpenAPI spec and answers with fixtures. It keeps no state and sends no
// webhooks, so it proves request shapes only.
type StripeMockServer struct {
	// URL is the API base, without /v1.
	URL string
	// Key is a test-mode key it accepts (any sk_test_… does).
	Key string
}

// StripeMock returns the test stripe-mock at VEIL_STRIPE_MOCK_URL (default
// http://127.0.0.1:12111). The test fails when it does not answer a real
// API call with a Stripe list.
func StripeMock(t testing.TB) *StripeMockServer {
	t.Helper()
	s := &StripeMockServer{
		URL: strings.TrimRight(Env("VEIL_STRIPE_MOCK_URL", "http://127.0.0.1:12111"), "/"),
		Key: "sk_test_123",
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/v1/customers?limit=1", nil)
	if err != nil {
		t.Fatalf("stripe-mock request: %v", err)
	}
	req.SetBasicAuth(s.Key, "")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("stripe-mock at %s does not answer (start it with deploy/local/services.sh up): %v", s.URL, err)
	}
	defer resp.Body.Close()
	var list struct{ Object string }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != http.StatusOK || list.Object != "list" {
		t.Fatalf("stripe-mock at %s: GET /v1/customers = %s, object %q (%v); want 200 and a list", s.URL, resp.Status, list.Object, err)
	}
	return s
}
