package main

import (
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal"
)

// portalFlags configure the portal's sign-in.
type portalFlags struct {
	oidcIssuer, oidcClientID, oidcClientSecret string
	oidcOrgClaim, oidcRoleClaim                string
	sessionTTL, idleTTL                        time.Duration
	// dev lists the development personas (veil dev only).
	dev []portal.DevPersona
}

func (p *portalFlags) register(f *flags) {
	f.String(&p.oidcIssuer, "oidc-issuer", "VEIL_OIDC_ISSUER", "", "OpenID provider the portal signs users in with (its issuer URL; empty: no OIDC sign-in)")
	f.String(&p.oidcClientID, "oidc-client-id", "VEIL_OIDC_CLIENT_ID", "", "the portal's client id at the OpenID provider")
	f.Secret(&p.oidcClientSecret, "VEIL_OIDC_CLIENT_SECRET")
	f.String(&p.oidcOrgClaim, "oidc-org-claim", "VEIL_OIDC_ORG_CLAIM", identity.DefaultOrgClaim, "ID token claim naming the user's organization (its slug)")
	f.String(&p.oidcRoleClaim, "oidc-role-claim", "VEIL_OIDC_ROLE_CLAIM", identity.DefaultRoleClaim, "ID token claim naming the user's role: admin, provider or consumer")
	f.Duration(&p.sessionTTL, "session-ttl", "VEIL_SESSION_TTL", portal.DefaultSessionTTL, "how long a portal sign-in lasts")
	f.Duration(&p.idleTTL, "session-idle-ttl", "VEIL_SESSION_IDLE_TTL", portal.DefaultIdleTTL, "a portal session unused this long ends")
}

// authConfig is the portal's sign-in on pool. Cookies are Secure when the
// public URL is https; OIDC needs the public URL for its callback.
func (p portalFlags) authConfig(pool *pgxpool.Pool, publicURL string, set *metrics.Set) (portal.AuthConfig, error) {
	cfg := portal.AuthConfig{Pool: pool, Metrics: set, SessionTTL: p.sessionTTL, IdleTTL: p.idleTTL, Dev: p.dev}
	if publicURL != "" {
		u, err := url.Parse(publicURL)
		if err != nil {
			return cfg, err
		}
		cfg.Secure = u.Scheme == "https"
	}
	if p.oidcIssuer == "" {
		if p.oidcClientID != "" {
			return cfg, errors.New("VEIL_OIDC_CLIENT_ID is set without VEIL_OIDC_ISSUER")
		}
		return cfg, nil
	}
	if p.oidcClientID == "" {
		return cfg, errors.New("VEIL_OIDC_ISSUER is set without VEIL_OIDC_CLIENT_ID")
	}
	if publicURL == "" {
		return cfg, errors.New("OIDC sign-in needs VEIL_PUBLIC_URL: the provider redirects browsers back to <public URL>/auth/callback")
	}
	cfg.OIDC = &portal.OIDCConfig{
		Issuer: p.oidcIssuer, ClientID: p.oidcClientID, ClientSecret: p.oidcClientSecret,
		RedirectURL: strings.TrimSuffix(publicURL, "/") + "/auth/callback", OrgClaim: p.oidcOrgClaim, RoleClaim: p.oidcRoleClaim,
	}
	return cfg, nil
}

// devPersonas are the demo's three users, for veil dev's one-click
// sign-in.
func devPersonas() []portal.DevPersona {
	return []portal.DevPersona{
		{Key: "consumer", Label: "Sam, consumer at demo-travel", Principal: identity.Principal{
			Subject: "sam", Org: "demo-travel", Role: identity.RoleConsumer, Name: "Sam (consumer)"}},
		{Key: "provider", Label: "Dana, provider at demo-weather", Principal: identity.Principal{
			Subject: "dana", Org: "demo-weather", Role: identity.RoleProvider, Name: "Dana (provider)"}},
		{Key: "admin", Label: "the platform operator", Principal: identity.Principal{
			Subject: "ops", Org: "veil-platform", Role: identity.RoleAdmin, Name: "Platform operator"}},
	}
}
