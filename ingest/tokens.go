package ingest

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/veil-platform/veil/internal/ingesttoken"
)

// DefaultTokenCacheTTL is how long ingest reuses a token lookup's answer.
const DefaultTokenCacheTTL = 5 * time.Second

// Bounds of the token caches. Live tokens and unknown ones are cached
// apart, so that a flood of made-up tokens only displaces other made-up
// ones; a full cache makes room one random entry at a time.
const (
	maxCachedTokens  = 10_000
	maxCachedUnknown = 10_000
)

// lookupTimeout bounds one Postgres lookup (of a token or of subscriptions):
// past it the request gets 503 instead of holding a connection.
const lookupTimeout = 2 * time.Second

// TokenLookup finds the scope of an issued token by its SHA-256, or
// returns ingesttoken.ErrUnknown, and the API of the subscriptions that a
// token scoped to APIs names as subjects. *ingesttoken.Store satisfies it.
type TokenLookup interface {
	Lookup(ctx context.Context, hash [32]byte) (ingesttoken.Scope, error)
	SubscriptionAPIs(ctx context.Context, ids []string) (map[string]string, error)
}

var _ TokenLookup = (*ingesttoken.Store)(nil)

// errUnauthorized: no token, or one that is neither a bootstrap token nor
// a live issued one.
var errUnauthorized = errors.New("unauthorized")

// staticToken is a bootstrap token from the configuration.
type staticToken struct {
	secret []byte
	scope  ingesttoken.Scope
}

// parseStaticToken reads one VEIL_INGEST_TOKENS entry: "secret" may write
// every source but a gateway's (bootstrap only: issue scoped tokens through
// the control plane for real producers); "secret=src1|src2" only those
// sources (an entry ending in * is a prefix).
// The error names the entry by its position (from 1), never by a piece of
// its secret.
func parseStaticToken(pos int, s string) (staticToken, error) {
	secret, sources, scoped := strings.Cut(s, "=")
	if len(secret) < 16 {
		return staticToken{}, errors.New("ingest config: bearer tokens must be at least 16 characters")
	}
	t := staticToken{secret: []byte(secret), scope: ingesttoken.Scope{Sources: []string{ingesttoken.Wildcard}}}
	if scoped {
		t.scope.Sources = strings.Split(sources, "|")
		for _, src := range t.scope.Sources {
			if d := ingesttoken.CheckSource(src); d != "" {
				return staticToken{}, fmt.Errorf("ingest config: a source of bearer token %d: %s", pos, d)
			}
		}
	}
	return t, nil
}

// authorize returns the scope of the request's bearer token: a bootstrap
// token's, or an issued one's from the cache or the lookup.
func (h *Handler) authorize(ctx context.Context, auth string) (ingesttoken.Scope, error) {
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ingesttoken.Scope{}, errUnauthorized
	}
	token = strings.TrimSpace(token)
	got := []byte(token)
	var (
		match int
		scope ingesttoken.Scope
	)
	for _, t := range h.tokens {
		if subtle.ConstantTimeCompare(got, t.secret) == 1 {
			match, scope = 1, t.scope
		}
	}
	if match == 1 {
		return scope, nil
	}
	// Only what could be an issued token costs a lookup.
	if h.cfg.Lookup == nil || !ingesttoken.WellFormed(token) {
		return ingesttoken.Scope{}, errUnauthorized
	}
	hash := ingesttoken.Hash(token)
	now := time.Now() // wall time, not the event clock: the TTL bounds revocation
	if scope, ok := h.tokenCache.get(hash, now); ok {
		return scope, nil
	}
	if _, ok := h.unknownTokens.get(hash, now); ok {
		return ingesttoken.Scope{}, errUnauthorized
	}
	// Concurrent requests with one token share one lookup, which no
	// single request's cancellation ends.
	v, err, _ := h.lookups.Do(string(hash[:]), func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		return h.cfg.Lookup.Lookup(lctx, hash)
	})
	switch {
	case errors.Is(err, ingesttoken.ErrUnknown):
		h.unknownTokens.put(hash, struct{}{}, now)
		return ingesttoken.Scope{}, errUnauthorized
	case err != nil:
		return ingesttoken.Scope{}, err
	}
	scope = v.(ingesttoken.Scope)
	h.tokenCache.put(hash, scope, now)
	return scope, nil
}
