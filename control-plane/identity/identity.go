// Package identity authenticates control-plane callers by their bearer
// tokens. A token is a JWT naming a user (sub), the organization the user
// acts for (org) and the role held there (role). Veil signs its own tokens
// with an HS256 shared secret (Mint, `veil token`); an external identity
// provider signs RS256 or ES256 tokens whose keys the Verifier reads from the
// provider's JWKS. Which algorithm a token may use follows from which key
// source is configured, never from the token itself. It also owns the
// roles and the Actor every domain service is asked by, including System,
// the actor of the control plane's own jobs.
package identity

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// DevJWTSecret is the HS256 secret `veil dev` uses when VEIL_JWT_SECRET is
// unset, so that `veil token --dev` mints tokens the local stack accepts.
// It is public: never use it where the control plane is reachable by others.
const DevJWTSecret = "veil-dev-jwt-secret-change-me"

// Sentinel errors. Every verification failure but ErrMissingToken wraps
// ErrInvalidToken; the more specific ones below are wrapped alongside it.
var (
	ErrMissingToken  = errors.New("missing bearer token")
	ErrInvalidToken  = errors.New("invalid token")
	ErrExpired       = errors.New("token expired")
	ErrNotYetValid   = errors.New("token not yet valid")
	ErrWrongIssuer   = errors.New("wrong token issuer")
	ErrWrongAudience = errors.New("wrong token audience")
	ErrInvalidClaims = errors.New("invalid token claims")
	ErrInvalidRole   = errors.New("invalid role")
)

// Role is what a user may do in an organization.
type Role string

// The roles. A user holds one role per organization.
const (
	// RoleAdmin is the platform operator: sees and decides everything.
	RoleAdmin Role = "admin"
	// RoleProvider publishes and manages APIs.
	RoleProvider Role = "provider"
	// RoleConsumer subscribes to plans and calls APIs.
	RoleConsumer Role = "consumer"
)

// ParseRole returns the role named s (exactly as spelled in tokens).
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleProvider, RoleConsumer:
		return r, nil
	}
	return "", fmt.Errorf("parse role %q: %w: want admin, provider or consumer", s, ErrInvalidRole)
}

// orgPattern is the organization slug every token must carry; the same
// slugs name organizations in URLs and in the database.
var orgPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)

// maxSubject bounds the subject so that a token cannot smuggle an unbounded
// string into logs, audit rows and rate-limit keys.
const maxSubject = 255

// Principal is the authenticated caller.
type Principal struct {
	Subject string // the user, the token's sub
	Org     string // organization slug
	Role    Role
	Name    string // optional display name
	Email   string // optional
	// EmailVerified: the token's email_verified claim, the identity
	// provider's word that the user controls Email. Only a verified email
	// becomes the user's address for notices (see accounts.Resolve).
	EmailVerified bool
	TokenID       string // the token's jti, for audit; may be empty for external tokens
}

// Validate reports whether p names a user, a valid organization slug and a
// known role. Errors wrap ErrInvalidClaims.
func (p Principal) Validate() error {
	switch {
	case p.Subject == "":
		return fmt.Errorf("%w: subject is required", ErrInvalidClaims)
	case len(p.Subject) > maxSubject:
		return fmt.Errorf("%w: subject longer than %d bytes", ErrInvalidClaims, maxSubject)
	case p.Org == "":
		return fmt.Errorf("%w: org is required", ErrInvalidClaims)
	case !orgPattern.MatchString(p.Org):
		return fmt.Errorf("%w: org %q must match %s", ErrInvalidClaims, p.Org, orgPattern)
	case p.Role == "":
		return fmt.Errorf("%w: role is required", ErrInvalidClaims)
	}
	if _, err := ParseRole(string(p.Role)); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidClaims, err)
	}
	return nil
}

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal Middleware stored in ctx.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

type trustedKey struct{}

// WithTrustedPrincipal returns a context with which a request passes
// Verifier.Middleware as p without a bearer token. It is for code in this
// process that already authenticated p by other means (the portal's
// session); no request from outside can carry it, since only Go code holding
// the context sets it. Never derive p from request input that no one
// authenticated.
func WithTrustedPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, trustedKey{}, p)
}

func trustedPrincipal(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(trustedKey{}).(Principal)
	return p, ok
}
