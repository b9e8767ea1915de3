package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestPaymentRateLimitPerOrganization: pay now and card setup share one
// budget per organization, whichever member or token calls, so that card
// testing through many tokens of one organization is bounded; another
// organization keeps its own budget, and other routes are not counted.
func TestPaymentRateLimitPerOrganization(t *testing.T) {
	limiter, err := middleware.NewRateLimiter(middleware.RateLimitConfig{Client: testenv.Redis(t), Prefix: "veil:test:rl:" + testenv.Suffix() + ":"})
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnvWith(t, func(c *httpapi.Config) {
		c.RateLimiter = limiter
		c.PaymentRate = middleware.Rate{Limit: 2, Period: time.Hour, Burst: 2}
	})
	alice := e.token("initech", "alice", identity.RoleConsumer)
	bob := e.token("initech", "bob", identity.RoleConsumer)
	carol := e.token("globex", "carol", identity.RoleConsumer)
	retry := "/v1/invoices/" + uuid.NewString() + "/payment/retry"
	for _, call := range []struct{ path, tok string }{{"/v1/billing/payment-methods/setup", alice}, {retry, bob}} {
		if status, b := e.do("POST", call.path, call.tok, nil); status == http.StatusTooManyRequests {
			t.Fatalf("POST %s within the budget = %d %s", call.path, status, b)
		}
	}
	for _, tok := range []string{alice, bob} {
		status, b := e.do("POST", "/v1/billing/payment-methods/setup", tok, nil)
		if status != http.StatusTooManyRequests || problemOf(t, b)["type"] != "https://veil.dev/problems/rate-limited" {
			t.Errorf("third payment call of the organization = %d %s; want 429 rate-limited", status, b)
		}
	}
	if status, b := e.do("POST", retry, carol, nil); status == http.StatusTooManyRequests {
		t.Errorf("another organization's pay now = %d %s; want its own budget", status, b)
	}
	e.must(http.StatusOK, "GET", "/v1/me", alice, nil, nil)
}

// TestPaymentRateLimitRetryAfter: the payment limiter's refusal says when
// to come back, with an Idempotency-Key (the idempotency layer sits between
// the limiter and the client) and without.
func TestPaymentRateLimitRetryAfter(t *testing.T) {
	limiter, err := middleware.NewRateLimiter(middleware.RateLimitConfig{Client: testenv.Redis(t), Prefix: "veil:test:rl:" + testenv.Suffix() + ":"})
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnvWith(t, func(c *httpapi.Config) {
		c.RateLimiter = limiter
		c.PaymentRate = middleware.Rate{Limit: 1, Period: time.Hour, Burst: 1}
	})
	tok := e.token("initech", "alice", identity.RoleConsumer)
	send := func(key string) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), "POST", e.Server.URL+"/v1/billing/payment-methods/setup", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
	send("")
	for _, key := range []string{"", uuid.NewString(), uuid.NewString()} {
		resp := send(key)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("refused payment call (Idempotency-Key %q) = %d, Retry-After %q; want 429 with Retry-After", key, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
}
