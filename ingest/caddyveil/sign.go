package caddyveil

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/veil-platform/veil/internal/originsig"
)

func init() {
	caddy.RegisterModule(Signer{})
}

// Signer is http.handlers.veil_sign: it proves to an API's upstream that a
// request came through the gateway. It replaces any Veil-Signature the
// client sent with the gateway's own, an HMAC-SHA256 with the API's
// signing secret over the time, the method, the path, the query and the
// API id (see internal/originsig). It runs after the route's rewrites,
// right before reverse_proxy, so the path and query it signs are the ones
// the upstream receives.
//
// It needs no veil app: every API route has one, with or without key
// authentication in front of it.
type Signer struct {
	// APIID is the API's id, part of what is signed.
	APIID string `json:"api_id"`
	// Secret is the API's current signing secret.
	Secret string `json:"secret"`
	// PreviousSecret, after a rotation, is the secret before it: until
	// PreviousUntil the header carries a second v1 signed with it, so an
	// upstream still holding the old secret keeps accepting calls while
	// its provider rolls the new one out.
	PreviousSecret string `json:"previous_secret,omitempty"`
	// PreviousUntil is when the previous secret stops being used, in Unix
	// seconds.
	PreviousUntil int64 `json:"previous_until,omitempty"`

	now func() time.Time
}

// CaddyModule returns the Caddy module information.
func (Signer) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.veil_sign", New: func() caddy.Module { return new(Signer) }}
}

// Provision sets the clock.
func (s *Signer) Provision(caddy.Context) error {
	s.now = time.Now
	return nil
}

// Validate checks the settings; it never echoes a secret.
func (s *Signer) Validate() error {
	switch {
	case s.APIID == "":
		return errors.New("veil_sign: api_id is required")
	case len(s.Secret) < 32 || strings.ContainsAny(s.Secret, "\r\n\x00"):
		return errors.New("veil_sign: secret must be at least 32 printable characters")
	case s.PreviousSecret != "" && (len(s.PreviousSecret) < 32 || s.PreviousUntil <= 0):
		return errors.New("veil_sign: previous_secret needs at least 32 characters and previous_until")
	}
	return nil
}

// ServeHTTP signs r and passes it on.
func (s *Signer) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	now := s.now()
	secrets := []string{s.Secret}
	if s.PreviousSecret != "" && now.Unix() < s.PreviousUntil {
		secrets = append(secrets, s.PreviousSecret)
	}
	// Set replaces every value a client sent under any spelling of the
	// name (header names are canonicalised on the way in).
	r.Header.Set(originsig.Header, originsig.Sign(now, r.Method, r.URL.EscapedPath(), r.URL.RawQuery, s.APIID, secrets...))
	// The error is returned as is: Caddy reads the status of a
	// caddyhttp.HandlerError from it.
	return next.ServeHTTP(w, r)
}

var (
	_ caddy.Provisioner           = (*Signer)(nil)
	_ caddy.Validator             = (*Signer)(nil)
	_ caddyhttp.MiddlewareHandler = (*Signer)(nil)
)
