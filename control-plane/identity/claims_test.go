package identity_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

func TestPrincipalFromClaims(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{
			"iss": "https://idp.example", "aud": []any{"veil-portal"}, "exp": 1.9e9, "iat": 1.7e9,
			"sub": "u-1", "org": "acme", "role": "provider", "name": "Ada", "email": "ada@example.com", "email_verified": true,
		}
	}
	full := identity.Principal{Subject: "u-1", Org: "acme", Role: identity.RoleProvider, Name: "Ada", Email: "ada@example.com", EmailVerified: true}
	tests := []struct {
		name            string
		edit            func(map[string]any)
		orgClaim, roleC string
		want            identity.Principal
		ok              bool
	}{
		{"all claims", func(map[string]any) {}, "", "", full, true},
		{"aud as a string", func(m map[string]any) { m["aud"] = "veil-portal" }, "", "", full, true},
		{"email_verified as a string", func(m map[string]any) { m["email_verified"] = "true" }, "", "", full, true},
		{"email_verified unreadable", func(m map[string]any) { m["email_verified"] = 1.0 }, "", "",
			identity.Principal{Subject: "u-1", Org: "acme", Role: identity.RoleProvider, Name: "Ada", Email: "ada@example.com"}, true},
		{"only the required claims", func(m map[string]any) { delete(m, "name"); delete(m, "email"); delete(m, "email_verified") }, "", "",
			identity.Principal{Subject: "u-1", Org: "acme", Role: identity.RoleProvider}, true},
		{"custom claim names", func(m map[string]any) {
			m["https://veil.example/org"], m["https://veil.example/role"] = "globex", "admin"
			delete(m, "org")
			delete(m, "role")
		}, "https://veil.example/org", "https://veil.example/role",
			identity.Principal{Subject: "u-1", Org: "globex", Role: identity.RoleAdmin, Name: "Ada", Email: "ada@example.com", EmailVerified: true}, true},
		{"custom names ignore org and role", func(m map[string]any) {}, "tenant", "veil_role", identity.Principal{}, false},
		{"jti becomes the token id", func(m map[string]any) { m["jti"] = "t-9" }, "", "",
			identity.Principal{Subject: "u-1", Org: "acme", Role: identity.RoleProvider, Name: "Ada", Email: "ada@example.com", EmailVerified: true, TokenID: "t-9"}, true},
		{"no org", func(m map[string]any) { delete(m, "org") }, "", "", identity.Principal{}, false},
		{"bad org slug", func(m map[string]any) { m["org"] = "Acme Inc" }, "", "", identity.Principal{}, false},
		{"org not a string", func(m map[string]any) { m["org"] = []any{"acme"} }, "", "", identity.Principal{}, false},
		{"no role", func(m map[string]any) { delete(m, "role") }, "", "", identity.Principal{}, false},
		{"unknown role", func(m map[string]any) { m["role"] = "owner" }, "", "", identity.Principal{}, false},
		{"system role", func(m map[string]any) { m["role"] = "system" }, "", "", identity.Principal{}, false},
		{"no subject", func(m map[string]any) { delete(m, "sub") }, "", "", identity.Principal{}, false},
		{"huge subject", func(m map[string]any) { m["sub"] = strings.Repeat("x", 256) }, "", "", identity.Principal{}, false},
		{"subject not a string", func(m map[string]any) { m["sub"] = 42.0 }, "", "", identity.Principal{}, false},
	}
	for _, tc := range tests {
		m := base()
		tc.edit(m)
		got, err := identity.PrincipalFromClaims(m, tc.orgClaim, tc.roleC)
		switch {
		case tc.ok && (err != nil || got != tc.want):
			t.Errorf("%s: PrincipalFromClaims = %+v, %v; want %+v, nil", tc.name, got, err, tc.want)
		case !tc.ok && (err == nil || !errors.Is(err, identity.ErrInvalidClaims)):
			t.Errorf("%s: PrincipalFromClaims = %+v, %v; want an error wrapping ErrInvalidClaims", tc.name, got, err)
		}
	}
}
