package portal

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal/internal/db"
)

// OIDCConfig configures sign-in with an OpenID provider: the authorization
// code flow with PKCE (S256), a state and a nonce.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL, exactly as its discovery
	// document spells it. Required.
	Issuer string
	// ClientID is the portal's client at the provider; ID tokens must name
	// it in aud. Required.
	ClientID string
	// ClientSecret authenticates a confidential client at the token
	// endpoint. Empty means a public client, which PKCE alone protects.
	ClientSecret string
	// RedirectURL is this portal's /auth/callback as the provider knows it,
	// e.g. https://veil.example.com/auth/callback. Required.
	RedirectURL string
	// Scopes requested. Nil means openid, profile and email; openid is
	// added when missing.
	Scopes []string
	// OrgClaim and RoleClaim name the ID token's claims that carry the
	// organization slug and the role. Empty means "org" and "role".
	OrgClaim, RoleClaim string
	// HTTPClient talks to the provider (discovery, keys, token endpoint).
	// Nil means a client with a 10s timeout.
	HTTPClient *http.Client
}

// Timeouts of the provider's endpoints.
const (
	providerTimeout = 10 * time.Second
	// rediscoverEvery spaces discovery attempts while the provider is down.
	rediscoverEvery = 10 * time.Second
	// maxProviderError bounds how much of a provider's error description
	// a page shows.
	maxProviderError = 300
)

// oidcClient is the relying party. Discovery happens in NewAuth and, while
// the provider has not answered, again on sign-in.
type oidcClient struct {
	cfg  OIDCConfig
	http *http.Client
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	ready    *oidcProvider // nil until discovery succeeds
	lastTry  time.Time
	lastFail error
}

// oidcProvider is what discovery yields.
type oidcProvider struct {
	provider *oidc.Provider
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
}

// profileClaims are the optional claims a Principal takes from the
// provider's UserInfo endpoint when the ID token lacks them: in the code
// flow, OpenID Connect Core (5.4) lets a provider put the profile and
// email scopes' claims there only. The organization and role never come
// from there: they must be in the signed ID token.
var profileClaims = []string{"name", "email", "email_verified"}

// addProfile fills claims' missing profile claims from the UserInfo
// endpoint, when the provider has one and answers for the same subject. A
// failure is logged: name and email are optional.
func (c *oidcClient) addProfile(ctx context.Context, p *oidcProvider, tok *oauth2.Token, subject string, claims map[string]any) {
	missing := false
	for _, k := range profileClaims {
		_, ok := claims[k]
		missing = missing || !ok
	}
	if !missing || p.provider.UserInfoEndpoint() == "" {
		return
	}
	ui, err := p.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		c.log.WarnContext(ctx, "sign-in: read UserInfo", "error", err)
		return
	}
	if ui.Subject != subject {
		c.log.WarnContext(ctx, "sign-in: UserInfo names another subject; ignored")
		return
	}
	var extra map[string]any
	if err := ui.Claims(&extra); err != nil {
		c.log.WarnContext(ctx, "sign-in: read UserInfo", "error", err)
		return
	}
	for _, k := range profileClaims {
		if _, ok := claims[k]; !ok {
			if v, ok := extra[k]; ok {
				claims[k] = v
			}
		}
	}
}

func newOIDCClient(ctx context.Context, cfg OIDCConfig, log *slog.Logger, now func() time.Time) (*oidcClient, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("oidc: an issuer URL is required")
	case cfg.ClientID == "":
		return nil, errors.New("oidc: a client id is required")
	}
	if u, err := url.Parse(cfg.RedirectURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("oidc: redirect URL %q: want an absolute http or https URL", cfg.RedirectURL)
	}
	if cfg.Scopes == nil {
		cfg.Scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	hasOpenID := false
	for _, s := range cfg.Scopes {
		hasOpenID = hasOpenID || s == oidc.ScopeOpenID
	}
	if !hasOpenID {
		cfg.Scopes = append([]string{oidc.ScopeOpenID}, cfg.Scopes...)
	}
	cfg.OrgClaim = cmp.Or(cfg.OrgClaim, identity.DefaultOrgClaim)
	cfg.RoleClaim = cmp.Or(cfg.RoleClaim, identity.DefaultRoleClaim)
	c := &oidcClient{cfg: cfg, http: cfg.HTTPClient, log: log, now: now}
	if c.http == nil {
		c.http = &http.Client{Timeout: providerTimeout}
	}
	if _, err := c.provider(ctx); err != nil {
		log.WarnContext(ctx, "OpenID provider discovery failed; sign-in retries it", "issuer", cfg.Issuer, "error", err)
	}
	return c, nil
}

// clientContext makes go-oidc and x/oauth2 use c's HTTP client.
func (c *oidcClient) clientContext(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, c.http)
}

// provider returns the discovered provider, discovering it when that has
// not succeeded yet and the last attempt is older than rediscoverEvery.
func (c *oidcClient) provider(ctx context.Context) (*oidcProvider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ready != nil {
		return c.ready, nil
	}
	if !c.lastTry.IsZero() && time.Since(c.lastTry) < rediscoverEvery {
		return nil, c.lastFail
	}
	c.lastTry = time.Now()
	dctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	// The key set keeps the context's HTTP client, not its deadline.
	p, err := oidc.NewProvider(c.clientContext(dctx), c.cfg.Issuer)
	if err != nil {
		c.lastFail = fmt.Errorf("discover OpenID provider %s: %w", c.cfg.Issuer, err)
		return nil, c.lastFail
	}
	c.ready = &oidcProvider{
		provider: p,
		oauth: oauth2.Config{
			ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret,
			Endpoint: p.Endpoint(), RedirectURL: c.cfg.RedirectURL, Scopes: c.cfg.Scopes,
		},
		verifier: p.Verifier(&oidc.Config{ClientID: c.cfg.ClientID, Now: c.now}),
	}
	return c.ready, nil
}

// loginBinding returns the browser's pre-session value, setting a new one
// when it has none: pending sign-ins are bound to it, so that a callback
// or a development form cannot be completed in another browser (login
// CSRF: an attacker's code signing the victim in as the attacker).
func (a *Auth) loginBinding(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(a.cookieName(loginCookie)); err == nil && len(c.Value) == len(randomToken()) {
		a.setCookie(w, loginCookie, c.Value, loginTTL)
		return c.Value
	}
	v := randomToken()
	a.setCookie(w, loginCookie, v, loginTTL)
	return v
}

// beginLogin stores a pending sign-in and returns its state (the OIDC
// state, or the development form's token).
func (a *Auth) beginLogin(ctx context.Context, w http.ResponseWriter, r *http.Request, method, verifier, nonce string) (string, error) {
	now := a.cfg.Now()
	if _, err := a.q.LoginDeleteExpired(ctx, now); err != nil {
		return "", fmt.Errorf("begin sign-in: %w", err)
	}
	state := randomToken()
	err := a.q.LoginInsert(ctx, db.LoginInsertParams{
		StateHash: hashToken(state), BindingHash: hashToken(a.loginBinding(w, r)), Method: method,
		Verifier: verifier, Nonce: nonce, ReturnTo: localPath(r.URL.Query().Get("return_to")),
		CreatedAt: now, ExpiresAt: now.Add(loginTTL),
	})
	if err != nil {
		return "", fmt.Errorf("begin sign-in: %w", err)
	}
	return state, nil
}

// errLoginStale: the state names no pending sign-in of this browser and
// method, or one that expired.
var errLoginStale = errors.New("sign-in expired or already used")

// takeLogin deletes the pending sign-in named by state and returns it
// when it belongs to this browser and method and has not expired.
func (a *Auth) takeLogin(ctx context.Context, r *http.Request, method, state string) (db.PortalLogin, error) {
	if state == "" {
		return db.PortalLogin{}, errLoginStale
	}
	row, err := a.q.LoginTake(ctx, hashToken(state))
	if errors.Is(err, pgx.ErrNoRows) {
		return db.PortalLogin{}, errLoginStale
	}
	if err != nil {
		return db.PortalLogin{}, fmt.Errorf("take sign-in: %w", err)
	}
	c, cerr := r.Cookie(a.cookieName(loginCookie))
	if cerr != nil || !tokenMatches(string(hashToken(c.Value)), string(row.BindingHash)) ||
		row.Method != method || !a.cfg.Now().Before(row.ExpiresAt) {
		return db.PortalLogin{}, errLoginStale
	}
	return row, nil
}

// login sends the browser to the provider.
func (a *Auth) login(w http.ResponseWriter, r *http.Request) {
	if a.oidc == nil {
		a.cfg.Fail(w, r, http.StatusNotFound, "Page not found", "Sign-in with an identity provider is not configured.")
		return
	}
	ctx := r.Context()
	p, err := a.oidc.provider(ctx)
	if err != nil {
		a.log.ErrorContext(ctx, "sign-in: OpenID provider unavailable", "error", err)
		a.signin(methodOIDC, resultError)
		a.cfg.Fail(w, r, http.StatusServiceUnavailable, "Sign-in unavailable", "The identity provider cannot be reached; try again in a moment.")
		return
	}
	verifier, nonce := oauth2.GenerateVerifier(), randomToken()
	state, err := a.beginLogin(ctx, w, r, methodOIDC, verifier, nonce)
	if err != nil {
		a.log.ErrorContext(ctx, "sign-in", "error", err)
		a.signin(methodOIDC, resultError)
		a.cfg.Fail(w, r, http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, p.oauth.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)), http.StatusFound)
}

// callback completes the sign-in the provider sent the browser back from.
func (a *Auth) callback(w http.ResponseWriter, r *http.Request) {
	if a.oidc == nil {
		a.cfg.Fail(w, r, http.StatusNotFound, "Page not found", "Sign-in with an identity provider is not configured.")
		return
	}
	ctx := r.Context()
	q := r.URL.Query()
	refuse := func(status int, title, detail string, logArgs ...any) {
		a.log.InfoContext(ctx, "sign-in refused", append([]any{"detail", detail}, logArgs...)...)
		a.signin(methodOIDC, resultRefused)
		a.cfg.Fail(w, r, status, title, detail)
	}
	fail := func(status int, title, detail string, err error) {
		a.log.ErrorContext(ctx, "sign-in failed", "error", err)
		a.signin(methodOIDC, resultError)
		a.cfg.Fail(w, r, status, title, detail)
	}

	login, err := a.takeLogin(ctx, r, methodOIDC, q.Get("state"))
	if code := q.Get("error"); code != "" {
		// The provider said no (RFC 6749 4.1.2.1); the state, if it was
		// ours, is used up all the same.
		status := http.StatusBadRequest
		switch code {
		case "access_denied", "login_required", "consent_required", "interaction_required", "account_selection_required":
			status = http.StatusUnauthorized
		}
		// The provider's words are shown only for a sign-in this browser
		// started: anyone can link here with an error of their own making.
		detail := "The identity provider refused the sign-in"
		if err == nil {
			detail = "The identity provider answered " + truncate(code, 64)
			if d := q.Get("error_description"); d != "" {
				detail += ": " + truncate(d, maxProviderError)
			}
		}
		refuse(status, "Sign-in refused", detail+".", "error_code", truncate(code, 64))
		return
	}
	switch {
	case errors.Is(err, errLoginStale):
		refuse(http.StatusBadRequest, "Sign-in expired", "This sign-in has expired or was already used. Sign in again.")
		return
	case err != nil:
		fail(http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg, err)
		return
	}
	p, err := a.oidc.provider(ctx)
	if err != nil {
		fail(http.StatusServiceUnavailable, "Sign-in unavailable", "The identity provider cannot be reached; try again in a moment.", err)
		return
	}
	pctx, cancel := context.WithTimeout(a.oidc.clientContext(ctx), providerTimeout)
	defer cancel()
	tok, err := p.oauth.Exchange(pctx, q.Get("code"), oauth2.VerifierOption(login.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			refuse(http.StatusUnauthorized, "Sign-in refused", "The identity provider did not accept the sign-in. Sign in again.", "error", err)
			return
		}
		fail(http.StatusBadGateway, "Sign-in failed", "The identity provider cannot be reached; try again in a moment.", err)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		fail(http.StatusBadGateway, "Sign-in failed", "The identity provider sent no ID token.", errors.New("token response without id_token"))
		return
	}
	idt, err := p.verifier.Verify(pctx, raw)
	if err != nil {
		refuse(http.StatusUnauthorized, "Sign-in refused", "The identity provider's ID token is not valid. Sign in again.", "error", err)
		return
	}
	if !tokenMatches(idt.Nonce, login.Nonce) {
		refuse(http.StatusUnauthorized, "Sign-in refused", "The identity provider's ID token is not for this sign-in. Sign in again.", "error", "nonce mismatch")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		refuse(http.StatusUnauthorized, "Sign-in refused", "The identity provider's ID token cannot be read.", "error", err)
		return
	}
	a.oidc.addProfile(pctx, p, tok, idt.Subject, claims)
	principal, err := identity.PrincipalFromClaims(claims, a.oidc.cfg.OrgClaim, a.oidc.cfg.RoleClaim)
	if err != nil {
		refuse(http.StatusForbidden, "No access to Veil",
			fmt.Sprintf("Your account is known to the identity provider, but it does not give you a Veil organization and role: "+
				"the ID token needs a %q claim (an organization slug) and a %q claim (admin, provider or consumer). Ask your administrator.",
				a.oidc.cfg.OrgClaim, a.oidc.cfg.RoleClaim),
			"subject", truncate(idt.Subject, 255), "error", err)
		return
	}
	if err := a.startSession(ctx, w, r, principal, methodOIDC); err != nil {
		fail(http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg, err)
		return
	}
	a.signin(methodOIDC, resultOK)
	a.log.InfoContext(ctx, "signed in", "method", methodOIDC, "subject", principal.Subject, "org", principal.Org, "role", string(principal.Role))
	http.Redirect(w, r, localPath(login.ReturnTo), http.StatusSeeOther)
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
