package portal

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal/internal/db"
)

// Session is a signed-in browser.
type Session struct {
	// Principal is who signed in, mapped from the ID token's claims as the
	// API maps a bearer token's (identity.PrincipalFromClaims), or a
	// development persona. It stays as it was at sign-in for the
	// session's life.
	Principal identity.Principal
	// CSRF is the token unsafe requests must carry: forms in the hidden
	// field "csrf", scripts in the header X-CSRF-Token.
	CSRF string
	// ExpiresAt is the session's absolute end; it may end earlier when
	// idle.
	ExpiresAt time.Time
}

type sessionKey struct{}

// SessionFrom returns the session Middleware found for the request.
func SessionFrom(ctx context.Context) (Session, bool) {
	s, ok := ctx.Value(sessionKey{}).(Session)
	return s, ok
}

// Cookie names. The __Host- prefix makes browsers accept the cookie only
// from this origin over https, with Path=/ and no Domain, so that no
// sibling subdomain can set or shadow it.
const (
	sessionCookie       = "veil_session"
	loginCookie         = "veil_login"
	securePrefix        = "__Host-"
	csrfHeader          = "X-CSRF-Token"
	csrfField           = "csrf"
	devSignInPath       = "/auth/dev"
	csrfRefusedTitle    = "The form expired"
	csrfRefusedDetail   = "The form expired; reload the page and try again."
	storeUnavailable    = "Service unavailable"
	storeUnavailableMsg = "The portal cannot reach its database; try again in a moment."
)

func (a *Auth) cookieName(base string) string {
	if a.cfg.Secure {
		return securePrefix + base
	}
	return base
}

func (a *Auth) setCookie(w http.ResponseWriter, base, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name:     a.cookieName(base),
		Value:    value,
		Path:     "/",
		MaxAge:   int(maxAge / time.Second),
		Secure:   a.cfg.Secure,
		HttpOnly: true,
		// Lax: the provider's redirect back to /auth/callback is a
		// top-level GET from another site, which must carry the login
		// cookie; cross-site POSTs carry neither cookie.
		SameSite: http.SameSiteLaxMode,
	})
}

func (a *Auth) clearCookie(w http.ResponseWriter, base string) {
	a.setCookie(w, base, "", -time.Second)
}

// startSession signs the browser in as p: it ends the browser's previous
// session, if any, stores a new one and sets its cookie. Expired sessions
// of everyone are deleted on the way.
func (a *Auth) startSession(ctx context.Context, w http.ResponseWriter, r *http.Request, p identity.Principal, method string) error {
	now := a.cfg.Now()
	if _, err := a.q.SessionDeleteExpired(ctx, db.SessionDeleteExpiredParams{Now: now, IdleBefore: now.Add(-a.cfg.IdleTTL)}); err != nil {
		return fmt.Errorf("start session: %w", err)
	}
	if c, err := r.Cookie(a.cookieName(sessionCookie)); err == nil && c.Value != "" {
		if err := a.q.SessionDelete(ctx, hashToken(c.Value)); err != nil {
			return fmt.Errorf("start session: %w", err)
		}
	}
	id := randomToken()
	err := a.q.SessionInsert(ctx, db.SessionInsertParams{
		IDHash: hashToken(id), Subject: p.Subject, Org: p.Org, Role: string(p.Role),
		Name: p.Name, Email: p.Email, EmailVerified: p.EmailVerified,
		Method: method, Csrf: randomToken(), CreatedAt: now, ExpiresAt: now.Add(a.cfg.SessionTTL),
	})
	if err != nil {
		return fmt.Errorf("start session: %w", err)
	}
	a.setCookie(w, sessionCookie, id, a.cfg.SessionTTL)
	return nil
}

// errNoSession: the request has no cookie, or one naming no live session.
var errNoSession = errors.New("no session")

// session returns the session r's cookie names, and its id hash. An
// expired or idle one is deleted and reported as errNoSession, as is a
// cookie naming none.
func (a *Auth) session(ctx context.Context, r *http.Request) (Session, []byte, error) {
	c, err := r.Cookie(a.cookieName(sessionCookie))
	if err != nil || c.Value == "" {
		return Session{}, nil, errNoSession
	}
	id := hashToken(c.Value)
	row, err := a.q.SessionGetByHash(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, nil, errNoSession
	}
	if err != nil {
		return Session{}, nil, fmt.Errorf("load session: %w", err)
	}
	now := a.cfg.Now()
	if !now.Before(row.ExpiresAt) || !now.Before(row.LastSeenAt.Add(a.cfg.IdleTTL)) {
		if err := a.q.SessionDelete(ctx, id); err != nil {
			return Session{}, nil, fmt.Errorf("delete expired session: %w", err)
		}
		return Session{}, nil, errNoSession
	}
	if now.Sub(row.LastSeenAt) >= touchEvery {
		if err := a.q.SessionTouch(ctx, db.SessionTouchParams{Seen: now, IDHash: id}); err != nil {
			return Session{}, nil, fmt.Errorf("touch session: %w", err)
		}
	}
	return Session{
		Principal: identity.Principal{
			Subject: row.Subject, Org: row.Org, Role: identity.Role(row.Role),
			Name: row.Name, Email: row.Email, EmailVerified: row.EmailVerified,
		},
		CSRF:      row.Csrf,
		ExpiresAt: row.ExpiresAt,
	}, id, nil
}

// Middleware finds the request's session (SessionFrom) and refuses unsafe
// requests (POST, PUT, PATCH, DELETE and any other method but GET, HEAD,
// OPTIONS and TRACE) that are cross-origin or do not carry the session's
// CSRF token: 403 "The form expired". A request without a session has no
// token to match, so every unsafe request needs a session, except POST
// /auth/dev, which checks its own pre-session token. Wrap only the
// portal's pages with it, not the bearer-token API.
//
// A cookie naming an expired, idle or unknown session is cleared. Every
// response varies by Cookie; one with a session is not stored by caches
// (Cache-Control: no-store).
func (a *Auth) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		w.Header().Add("Vary", "Cookie")
		s, _, err := a.session(ctx, r)
		switch {
		case err == nil:
			w.Header().Set("Cache-Control", "no-store")
			ctx = context.WithValue(ctx, sessionKey{}, s)
		case errors.Is(err, errNoSession):
			if _, cerr := r.Cookie(a.cookieName(sessionCookie)); cerr == nil {
				a.clearCookie(w, sessionCookie)
			}
		default:
			a.log.ErrorContext(ctx, "load portal session", "error", err)
			a.cfg.Fail(w, r, http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg)
			return
		}
		if !safeMethod(r.Method) && !(r.Method == http.MethodPost && r.URL.Path == devSignInPath) {
			if err != nil || !a.sameOrigin(r) || !tokenMatches(csrfToken(r), s.CSRF) {
				a.refuseCSRF(w, r)
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Require lets requests with a session through. Without one, a GET or
// HEAD is redirected to /signin?return_to=<its path and query>, anything
// else gets 401.
func (a *Auth) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := SessionFrom(r.Context()); ok {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			http.Redirect(w, r, "/signin?return_to="+url.QueryEscape(localPath(r.URL.RequestURI())), http.StatusSeeOther)
			return
		}
		a.cfg.Fail(w, r, http.StatusUnauthorized, "Sign in required", "Sign in to do this.")
	})
}

// logout ends the session server-side and clears its cookie. Middleware
// checked the CSRF token.
func (a *Auth) logout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if _, id, err := a.session(ctx, r); err == nil {
		if err := a.q.SessionDelete(ctx, id); err != nil {
			a.log.ErrorContext(ctx, "delete portal session", "error", err)
			a.cfg.Fail(w, r, http.StatusServiceUnavailable, storeUnavailable, storeUnavailableMsg)
			return
		}
		a.metrics.signouts.Inc()
	}
	a.clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// safeMethod: the methods RFC 9110 calls safe, which change nothing.
func safeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// sameOrigin reports whether the browser says r comes from this origin
// (Sec-Fetch-Site same-origin or none, else an Origin matching Host); a
// request saying neither is not a browser's cross-site one.
func (a *Auth) sameOrigin(r *http.Request) bool {
	return a.cop.Check(r) == nil
}

// csrfToken is the token r carries: the header, else the form field.
func csrfToken(r *http.Request) string {
	if t := r.Header.Get(csrfHeader); t != "" {
		return t
	}
	return r.PostFormValue(csrfField)
}

// tokenMatches compares in constant time; an empty token matches nothing.
func tokenMatches(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (a *Auth) refuseCSRF(w http.ResponseWriter, r *http.Request) {
	a.metrics.csrfRefusals.Inc()
	a.log.InfoContext(r.Context(), "unsafe request refused: cross-origin or without its CSRF token", "method", r.Method, "path", r.URL.Path)
	a.cfg.Fail(w, r, http.StatusForbidden, csrfRefusedTitle, csrfRefusedDetail)
}
