package identity

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mint returns an HS256 token for p, issued at now and valid for ttl, with
// a fresh random jti (p.TokenID is ignored). It is how `veil token` and
// tests obtain tokens a Verifier configured with the same secret, issuer and
// audience accepts.
func Mint(secret []byte, issuer, audience string, p Principal, ttl time.Duration, now time.Time) (string, error) {
	switch {
	case len(secret) == 0:
		return "", errors.New("mint token: empty secret")
	case issuer == "":
		return "", errors.New("mint token: empty issuer")
	case audience == "":
		return "", errors.New("mint token: empty audience")
	case ttl <= 0:
		return "", fmt.Errorf("mint token: ttl %s: want a positive duration", ttl)
	}
	if err := p.Validate(); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	c := claims{
		Org: p.Org, Role: string(p.Role), Name: p.Name, Email: p.Email, EmailVerified: claimBool(p.EmailVerified),
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   p.Subject,
			Audience:  jwt.ClaimStrings{audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        rand.Text(),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}
