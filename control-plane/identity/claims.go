package identity

import (
	"cmp"
	"encoding/json"
	"fmt"
)

// Default claim names of PrincipalFromClaims.
const (
	DefaultOrgClaim  = "org"
	DefaultRoleClaim = "role"
)

// PrincipalFromClaims maps the claims of a token another verifier already
// checked (the portal's OpenID Connect ID token: signature, issuer,
// audience, expiry and nonce are go-oidc's to check) to a Principal, with
// the rules Verify applies to a bearer token's claims: sub, the
// organization slug and the role are required and checked, name, email and
// email_verified are read as Verify reads them. orgClaim and roleClaim name
// the claims that carry the organization and the role; empty means "org"
// and "role". A claim of the wrong type is refused, as Verify refuses it.
// Errors wrap ErrInvalidClaims.
func PrincipalFromClaims(m map[string]any, orgClaim, roleClaim string) (Principal, error) {
	// Only the claims a Principal is made of go through claims' decoding:
	// registered claims the other verifier checked (aud, exp, …) may be
	// spelled in ways this package's JWT library reads differently.
	pick := map[string]any{}
	for to, from := range map[string]string{
		"sub": "sub", "jti": "jti", "name": "name", "email": "email", "email_verified": "email_verified",
		"org":  cmp.Or(orgClaim, DefaultOrgClaim),
		"role": cmp.Or(roleClaim, DefaultRoleClaim),
	} {
		if v, ok := m[from]; ok {
			pick[to] = v
		}
	}
	raw, err := json.Marshal(pick)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrInvalidClaims, err)
	}
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrInvalidClaims, err)
	}
	return c.principal()
}
