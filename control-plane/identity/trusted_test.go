package identity_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
)

func TestMiddlewareTrustedPrincipal(t *testing.T) {
	v, _ := newVerifier(t, identity.Config{Secret: []byte(testSecret)})
	alice := identity.Principal{Subject: "alice", Org: "acme", Role: identity.RoleConsumer, Email: "alice@example.com", EmailVerified: true}
	bob := identity.Principal{Subject: "bob", Org: "globex", Role: identity.RoleAdmin}
	bobToken, err := identity.Mint([]byte(testSecret), testIssuer, testAudience, bob, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ctx    func(context.Context) context.Context
		header string
		status int
		want   identity.Principal
	}{
		{"trusted, no token", func(c context.Context) context.Context { return identity.WithTrustedPrincipal(c, alice) }, "", http.StatusOK, alice},
		{"trusted wins over a token", func(c context.Context) context.Context { return identity.WithTrustedPrincipal(c, alice) }, "Bearer " + bobToken, http.StatusOK, alice},
		{"invalid trusted principal", func(c context.Context) context.Context {
			return identity.WithTrustedPrincipal(c, identity.Principal{Subject: "x", Org: "acme", Role: identity.RoleSystem})
		}, "Bearer " + bobToken, http.StatusUnauthorized, identity.Principal{}},
		// WithPrincipal is what the middleware stores, not what it trusts.
		{"plain WithPrincipal is not trusted", func(c context.Context) context.Context { return identity.WithPrincipal(c, alice) }, "", http.StatusUnauthorized, identity.Principal{}},
		{"no context, token", func(c context.Context) context.Context { return c }, "Bearer " + bobToken, http.StatusOK, bob},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got identity.Principal
			var called bool
			h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				got, _ = identity.FromContext(r.Context())
			}))
			req := httptest.NewRequestWithContext(tc.ctx(t.Context()), http.MethodGet, "/v1/me", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status = %d; want %d (body %s)", rec.Code, tc.status, rec.Body)
			}
			if called != (tc.status == http.StatusOK) {
				t.Fatalf("next called = %v; want %v", called, tc.status == http.StatusOK)
			}
			if !called {
				return
			}
			got.TokenID = ""
			if got != tc.want {
				t.Fatalf("FromContext = %+v; want %+v", got, tc.want)
			}
		})
	}
}
