package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
)

// runToken mints a control-plane bearer token, for operators, scripts and
// local development; production users get theirs from the identity provider.
func runToken(_ context.Context, args []string, stdout, _ io.Writer) error {
	var (
		org, user, role, name, email string
		secret, issuer, audience     string
		ttl                          time.Duration
		dev, emailVerified           bool
	)
	f := newFlags("token", `Prints an HS256 bearer token for the control plane, signed with the secret the
control plane verifies with (VEIL_JWT_SECRET):

  veil token --org acme --user alice --role provider
  curl -H "Authorization: Bearer $(veil token --dev --org acme --user alice --role provider)" ...`, stdout)
	f.String(&org, "org", "", "", "organization slug the token acts for (required)")
	f.String(&user, "user", "", "", "user subject, the token's sub (required)")
	f.String(&role, "role", "", "", "role in the organization: admin, provider or consumer (required)")
	f.String(&name, "name", "", "", "display name (optional)")
	f.String(&email, "email", "", "", "email address (optional)")
	// The signer vouches for the address the way an identity provider does
	// with email_verified: the control plane stores no unverified email.
	f.Bool(&emailVerified, "email-verified", "", true, "mark --email as verified (email_verified), so the control plane adopts it as the user's address; false mints an address it ignores")
	f.Duration(&ttl, "ttl", "", 24*time.Hour, "how long the token stays valid")
	f.String(&secret, "jwt-secret", "VEIL_JWT_SECRET", "", "HS256 secret that signs the token")
	f.String(&issuer, "jwt-issuer", "VEIL_JWT_ISSUER", identity.DefaultIssuer, "token issuer")
	f.String(&audience, "jwt-audience", "VEIL_JWT_AUDIENCE", identity.DefaultAudience, "token audience")
	f.Bool(&dev, "dev", "", false, "sign with the development secret of veil dev when no secret is set")
	if err := f.Parse(args); err != nil {
		return err
	}

	var missing []string
	for _, req := range []struct{ flag, value string }{{"--org", org}, {"--user", user}, {"--role", role}} {
		if req.value == "" {
			missing = append(missing, req.flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing required flags: %s", strings.Join(missing, ", "))
	}
	r, err := identity.ParseRole(role)
	if err != nil {
		return err
	}
	// Empty means the default, as it does for the control plane's verifier.
	if issuer == "" {
		issuer = identity.DefaultIssuer
	}
	if audience == "" {
		audience = identity.DefaultAudience
	}
	if secret == "" {
		if !dev {
			return errors.New("no signing secret: set VEIL_JWT_SECRET (or --jwt-secret) to the control plane's secret, or pass --dev to use the secret of veil dev")
		}
		secret = identity.DevJWTSecret
	}
	tok, err := identity.Mint([]byte(secret), issuer, audience,
		identity.Principal{Subject: user, Org: org, Role: r, Name: name, Email: email, EmailVerified: email != "" && emailVerified}, ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
