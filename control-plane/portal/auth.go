package portal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal/internal/db"
)

// Defaults of AuthConfig.
const (
	DefaultSessionTTL = 12 * time.Hour
	DefaultIdleTTL    = 2 * time.Hour
)

// loginTTL bounds a sign-in under way: the time from /auth/login to the
// provider's redirect back, or from the development form to its button.
const loginTTL = 10 * time.Minute

// touchEvery is how stale last_seen_at may get before a request writes it.
const touchEvery = time.Minute

// Sign-in methods, as stored and as the signins counter's label.
const (
	methodOIDC = "oidc"
	methodDev  = "dev"
)

// DevPersona is a principal `veil dev` offers to sign in as without an
// identity provider.
type DevPersona struct {
	// Key names the persona in /auth/dev?persona=KEY.
	Key string
	// Label is what the sign-in button says.
	Label     string
	Principal identity.Principal
}

// AuthConfig configures Auth.
type AuthConfig struct {
	// Pool holds portal_sessions and portal_logins. Required.
	Pool *pgxpool.Pool
	// Logger logs refused sign-ins (at info) and store failures. Nil
	// discards.
	Logger *slog.Logger
	// Metrics receives veil_portal_signins_total{method,result},
	// veil_portal_signouts_total and veil_portal_csrf_refusals_total. Nil
	// means a private set.
	Metrics *metrics.Set
	// Secure marks cookies Secure and names them with the __Host- prefix.
	// Set it whenever browsers reach the portal over https (behind a
	// TLS-terminating proxy too); false only for plain-http local
	// development, where browsers would drop Secure cookies.
	Secure bool
	// OIDC configures sign-in with an OpenID provider. Nil turns it off:
	// /auth/login answers 404.
	OIDC *OIDCConfig
	// Dev lists the personas of development sign-in (/auth/dev). Nil turns
	// it off (404); only `veil dev` sets it, since it signs anyone in as
	// anyone.
	Dev []DevPersona
	// SessionTTL is a session's absolute life and the cookie's Max-Age.
	// Zero means 12h.
	SessionTTL time.Duration
	// IdleTTL ends a session unused for that long. Zero means 2h.
	IdleTTL time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Fail renders an error page. Nil means plain text.
	Fail func(w http.ResponseWriter, r *http.Request, status int, title, detail string)
	// RenderDev renders the development sign-in page: a form per persona
	// (or the selected one alone, when selected is not empty) that POSTs
	// to /auth/dev the fields "persona" (its Key) and "csrf" (the csrf
	// given, single use, bound to the browser, valid 10 minutes). r's
	// query return_to is already stored with the token: the form need not
	// carry it. Required when Dev is set.
	RenderDev func(w http.ResponseWriter, r *http.Request, personas []DevPersona, selected string, csrf string)
}

// Auth signs browsers in (OpenID Connect, or development personas), keeps
// their sessions in Postgres and guards unsafe requests against cross-site
// request forgery. It is safe for concurrent use.
type Auth struct {
	cfg     AuthConfig
	q       *db.Queries
	log     *slog.Logger
	oidc    *oidcClient // nil without cfg.OIDC
	cop     *http.CrossOriginProtection
	metrics authMetrics
}

type authMetrics struct {
	signins      map[[2]string]*metrics.Counter // method, result
	signouts     *metrics.Counter
	csrfRefusals *metrics.Counter
}

// Sign-in results, the result label of veil_portal_signins_total.
const (
	resultOK      = "ok"      // signed in
	resultRefused = "refused" // the browser's fault: a stale state, a provider error, claims without org or role
	resultError   = "error"   // ours or the provider's: a store or network failure
)

// NewAuth returns an Auth for cfg. With cfg.OIDC it discovers the provider
// (its /.well-known/openid-configuration) once, with a 10s timeout; when
// the provider does not answer, NewAuth logs it and returns anyway, and
// each /auth/login tries discovery again (at most once every 10s) until
// one succeeds, answering 503 meanwhile: the control plane starts while
// the provider is down. A malformed configuration is an error.
func NewAuth(ctx context.Context, cfg AuthConfig) (*Auth, error) {
	if cfg.Pool == nil {
		return nil, errors.New("new auth: a Postgres pool is required")
	}
	if cfg.SessionTTL < 0 || cfg.IdleTTL < 0 {
		return nil, fmt.Errorf("new auth: negative session TTL %s or idle TTL %s", cfg.SessionTTL, cfg.IdleTTL)
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.IdleTTL == 0 {
		cfg.IdleTTL = DefaultIdleTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Fail == nil {
		cfg.Fail = func(w http.ResponseWriter, _ *http.Request, status int, title, detail string) {
			http.Error(w, title+": "+detail, status)
		}
	}
	if cfg.Dev != nil {
		if cfg.RenderDev == nil {
			return nil, errors.New("new auth: development sign-in needs RenderDev")
		}
		seen := map[string]bool{}
		for _, p := range cfg.Dev {
			if p.Key == "" || seen[p.Key] {
				return nil, fmt.Errorf("new auth: development persona key %q: want a unique non-empty key", p.Key)
			}
			seen[p.Key] = true
			if err := p.Principal.Validate(); err != nil {
				return nil, fmt.Errorf("new auth: development persona %q: %w", p.Key, err)
			}
		}
	}
	a := &Auth{
		cfg: cfg,
		q:   db.New(cfg.Pool),
		log: cfg.Logger,
		cop: http.NewCrossOriginProtection(),
	}
	a.metrics.signins = map[[2]string]*metrics.Counter{}
	for _, m := range []string{methodOIDC, methodDev} {
		for _, r := range []string{resultOK, resultRefused, resultError} {
			a.metrics.signins[[2]string{m, r}] = cfg.Metrics.GetOrCreateCounter(`veil_portal_signins_total{method="` + m + `",result="` + r + `"}`)
		}
	}
	a.metrics.signouts = cfg.Metrics.GetOrCreateCounter("veil_portal_signouts_total")
	a.metrics.csrfRefusals = cfg.Metrics.GetOrCreateCounter("veil_portal_csrf_refusals_total")
	if cfg.OIDC != nil {
		c, err := newOIDCClient(ctx, *cfg.OIDC, cfg.Logger, cfg.Now)
		if err != nil {
			return nil, fmt.Errorf("new auth: %w", err)
		}
		a.oidc = c
	}
	return a, nil
}

// DevPersonas returns the development personas (nil when development
// sign-in is off).
func (a *Auth) DevPersonas() []DevPersona { return a.cfg.Dev }

// OIDCEnabled reports whether sign-in with the OpenID provider is on, for
// the sign-in page to offer it.
func (a *Auth) OIDCEnabled() bool { return a.oidc != nil }

// Routes registers the sign-in routes on r, which must be behind
// Middleware (logout relies on its CSRF check):
//
//	GET  /auth/login?return_to=/path  to the OpenID provider
//	GET  /auth/callback               back from it
//	POST /auth/logout                 sign out
//	GET  /auth/dev?persona=KEY        the development sign-in form
//	POST /auth/dev                    its button
func (a *Auth) Routes(r chi.Router) {
	r.Get("/auth/login", a.login)
	r.Get("/auth/callback", a.callback)
	r.Post("/auth/logout", a.logout)
	r.Get("/auth/dev", a.devForm)
	r.Post("/auth/dev", a.devSignIn)
}

// signin counts a sign-in attempt's outcome.
func (a *Auth) signin(method, result string) {
	a.metrics.signins[[2]string{method, result}].Inc()
}

// localPath returns p when it is a path on this origin that a redirect
// may go to, else "/": it must start with a single slash and carry no
// backslash or control character, so that no browser reads it as
// another host (//evil.example, /\evil.example).
func localPath(p string) string {
	if p == "" || len(p) > 2048 || p[0] != '/' || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\") {
		return "/"
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return "/"
		}
	}
	return p
}

// randomToken returns 32 random bytes, base64url without padding.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// hashToken is what the database stores of a cookie or state value.
func hashToken(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
