package identity_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/problem"
)

func TestMiddleware(t *testing.T) {
	v, _ := newVerifier(t, identity.Config{Secret: []byte(testSecret)})
	alice := identity.Principal{Subject: "alice", Org: "acme", Role: identity.RoleConsumer}
	valid, err := identity.Mint([]byte(testSecret), testIssuer, testAudience, alice, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired, err := identity.Mint([]byte(testSecret), testIssuer, testAudience, alice, time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := identity.Mint([]byte("not-the-secret-not-the-secret-xx"), testIssuer, testAudience, alice, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	const (
		missing = `Bearer realm="veil"`
		invalid = `Bearer realm="veil", error="invalid_token"`
	)
	tests := []struct {
		name      string
		header    string // Authorization; "" sends none
		status    int
		challenge string
		detail    string
	}{
		{"valid", "Bearer " + valid, http.StatusOK, "", ""},
		{"scheme is case-insensitive", "bearer " + valid, http.StatusOK, "", ""},
		{"no header", "", http.StatusUnauthorized, missing, "A bearer token is required."},
		{"another scheme", "Basic YWxpY2U6c2VjcmV0", http.StatusUnauthorized, missing, "A bearer token is required."},
		{"empty bearer", "Bearer ", http.StatusUnauthorized, missing, "A bearer token is required."},
		{"garbage", "Bearer abc.def.ghi", http.StatusUnauthorized, invalid, "The bearer token is invalid."},
		{"wrong secret", "Bearer " + forged, http.StatusUnauthorized, invalid, "The bearer token is invalid."},
		{"expired", "Bearer " + expired, http.StatusUnauthorized, invalid, "The bearer token has expired."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got identity.Principal
			var called bool
			h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				got, _ = identity.FromContext(r.Context())
			}))
			req := httptest.NewRequest(http.MethodGet, "/v1/apis", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tc.status {
				t.Fatalf("status = %d; want %d (body %s)", rec.Code, tc.status, rec.Body)
			}
			if tc.status == http.StatusOK {
				if !called {
					t.Fatal("next handler not called; want called")
				}
				if got.Subject != alice.Subject || got.Org != alice.Org || got.Role != alice.Role || got.TokenID == "" {
					t.Fatalf("FromContext = %+v; want %+v with a token id", got, alice)
				}
				return
			}
			if called {
				t.Fatal("next handler called; want the request stopped")
			}
			if h := rec.Header().Get("WWW-Authenticate"); h != tc.challenge {
				t.Errorf("WWW-Authenticate = %q; want %q", h, tc.challenge)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q; want application/problem+json", ct)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			want := map[string]any{
				"type": problem.TypeBase + "unauthorized", "title": "Unauthorized",
				"status": float64(http.StatusUnauthorized), "detail": tc.detail,
			}
			for k, w := range want {
				if body[k] != w {
					t.Errorf("body[%q] = %v; want %v", k, body[k], w)
				}
			}
			if len(body) != len(want) {
				t.Errorf("body = %v; want only %v", body, want)
			}
		})
	}
}

func TestFromContextWithoutPrincipal(t *testing.T) {
	if p, ok := identity.FromContext(t.Context()); ok {
		t.Fatalf("FromContext(empty) = %+v, true; want false", p)
	}
	want := identity.Principal{Subject: "op", Org: "platform", Role: identity.RoleAdmin}
	if p, ok := identity.FromContext(identity.WithPrincipal(t.Context(), want)); !ok || p != want {
		t.Fatalf("FromContext(WithPrincipal(p)) = %+v, %v; want %+v, true", p, ok, want)
	}
}
