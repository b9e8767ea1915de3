package identity_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
)

func TestParseRole(t *testing.T) {
	tests := []struct {
		in   string
		want identity.Role
		err  error
	}{
		{"admin", identity.RoleAdmin, nil},
		{"provider", identity.RoleProvider, nil},
		{"consumer", identity.RoleConsumer, nil},
		{"Admin", "", identity.ErrInvalidRole},
		{"root", "", identity.ErrInvalidRole},
		{"", "", identity.ErrInvalidRole},
	}
	for _, tc := range tests {
		got, err := identity.ParseRole(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("ParseRole(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestPrincipalValidate(t *testing.T) {
	ok := identity.Principal{Subject: "alice", Org: "acme", Role: identity.RoleProvider}
	tests := []struct {
		name  string
		edit  func(*identity.Principal)
		valid bool
	}{
		{"valid", func(*identity.Principal) {}, true},
		{"two-letter org", func(p *identity.Principal) { p.Org = "ab" }, true},
		{"63-letter org", func(p *identity.Principal) { p.Org = strings.Repeat("a", 63) }, true},
		{"digits and dashes", func(p *identity.Principal) { p.Org = "9-lives-inc" }, true},
		{"one-letter org", func(p *identity.Principal) { p.Org = "a" }, false},
		{"64-letter org", func(p *identity.Principal) { p.Org = strings.Repeat("a", 64) }, false},
		{"leading dash", func(p *identity.Principal) { p.Org = "-acme" }, false},
		{"upper case", func(p *identity.Principal) { p.Org = "Acme" }, false},
		{"no org", func(p *identity.Principal) { p.Org = "" }, false},
		{"no subject", func(p *identity.Principal) { p.Subject = "" }, false},
		{"huge subject", func(p *identity.Principal) { p.Subject = strings.Repeat("x", 256) }, false},
		{"no role", func(p *identity.Principal) { p.Role = "" }, false},
		{"unknown role", func(p *identity.Principal) { p.Role = "owner" }, false},
	}
	for _, tc := range tests {
		p := ok
		tc.edit(&p)
		err := p.Validate()
		if (err == nil) != tc.valid || (err != nil && !errors.Is(err, identity.ErrInvalidClaims)) {
			t.Errorf("%s: Validate(%+v) = %v; want valid=%v", tc.name, p, err, tc.valid)
		}
	}
}

func TestMintVerifyRoundTrip(t *testing.T) {
	v, _ := newVerifier(t, identity.Config{Secret: []byte(testSecret), Issuer: "veil-test", Audience: "tests"})
	in := identity.Principal{Subject: "u-123", Org: "acme", Role: identity.RoleAdmin, Name: "Ada", Email: "ada@example.com", EmailVerified: true, TokenID: "ignored"}
	seen := map[string]bool{}
	for range 3 {
		raw, err := identity.Mint([]byte(testSecret), "veil-test", "tests", in, time.Minute, time.Now())
		if err != nil {
			t.Fatalf("Mint = %v", err)
		}
		got, err := v.Verify(t.Context(), raw)
		if err != nil {
			t.Fatalf("Verify(Mint(p)) = %v; want accepted", err)
		}
		if got.TokenID == "" || got.TokenID == in.TokenID || seen[got.TokenID] {
			t.Fatalf("Verify(Mint(p)).TokenID = %q; want a fresh random jti", got.TokenID)
		}
		seen[got.TokenID] = true
		got.TokenID = in.TokenID
		if got != in {
			t.Fatalf("Verify(Mint(p)) = %+v; want %+v", got, in)
		}
	}
}

func TestMintRefuses(t *testing.T) {
	p := identity.Principal{Subject: "alice", Org: "acme", Role: identity.RoleConsumer}
	tests := []struct {
		name     string
		secret   string
		iss, aud string
		p        identity.Principal
		ttl      time.Duration
	}{
		{"empty secret", "", "veil", "aud", p, time.Hour},
		{"empty issuer", testSecret, "", "aud", p, time.Hour},
		{"empty audience", testSecret, "veil", "", p, time.Hour},
		{"zero ttl", testSecret, "veil", "aud", p, 0},
		{"bad org", testSecret, "veil", "aud", identity.Principal{Subject: "alice", Org: "A", Role: identity.RoleConsumer}, time.Hour},
		{"bad role", testSecret, "veil", "aud", identity.Principal{Subject: "alice", Org: "acme", Role: "owner"}, time.Hour},
	}
	for _, tc := range tests {
		if raw, err := identity.Mint([]byte(tc.secret), tc.iss, tc.aud, tc.p, tc.ttl, time.Now()); err == nil {
			t.Errorf("%s: Mint = %q, nil; want an error", tc.name, raw)
		}
	}
}
