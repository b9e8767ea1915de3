package identity

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/veil-platform/veil/internal/problem"
)

// Middleware authenticates every request by its `Authorization: Bearer`
// token and stores the Principal in the request context (FromContext). A
// request without a valid token gets 401 with an RFC 9457 problem and an
// RFC 6750 challenge; the detail says only whether the token was missing,
// expired or otherwise invalid, so that probing learns nothing about keys
// or claims.
//
// A request whose context carries a trusted principal (WithTrustedPrincipal,
// which only code in this process can call: the portal calling the API on
// behalf of a signed-in browser) skips the bearer check: that principal is
// stored as if a token had carried it.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := trustedPrincipal(r.Context()); ok {
			if err := p.Validate(); err != nil {
				v.log.ErrorContext(r.Context(), "trusted principal refused", "error", err, "method", r.Method, "path", r.URL.Path)
				unauthorized(w, fmt.Errorf("%w: %w", ErrInvalidToken, err))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
			return
		}
		p, err := v.Verify(r.Context(), bearer(r))
		if err != nil {
			v.log.DebugContext(r.Context(), "request refused", "error", err, "method", r.Method, "path", r.URL.Path)
			unauthorized(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// bearer returns the request's bearer token, or "" when it has none. The
// scheme is case-insensitive (RFC 7235); another scheme counts as none.
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

func unauthorized(w http.ResponseWriter, err error) {
	challenge, detail := `Bearer realm="veil", error="invalid_token"`, "The bearer token is invalid."
	switch {
	case errors.Is(err, ErrMissingToken):
		// RFC 6750 section 3.1: no error code when no credentials came.
		challenge, detail = `Bearer realm="veil"`, "A bearer token is required."
	case errors.Is(err, ErrExpired):
		detail = "The bearer token has expired."
	}
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Cache-Control", "no-store")
	problem.Write(w, problem.New(http.StatusUnauthorized, "unauthorized", "Unauthorized", detail))
}
