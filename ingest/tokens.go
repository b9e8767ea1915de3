package ingest

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/veil-platform/veil/internal/ingesttoken"
)

// DefaultTokenCacheTTL is how long ingest reuses a token lookup's answer.
const DefaultTokenCacheTTL = 5 * time.Second

// maxCachedTokens bounds the token cache; a full cache is emptied, which
// costs one lookup per token in use.
const maxCachedTokens = 10_000

// TokenLookup finds the scope of an issued token by its SHA-256, or
// returns ingesttoken.ErrUnknown. *ingesttoken.Store satisfies it.
type TokenLookup interface {
	Lookup(ctx context.Context, hash [32]byte) (ingesttoken.Scope, error)
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
func parseStaticToken(s string) (staticToken, error) {
	secret, sources, scoped := strings.Cut(s, "=")
	if len(secret) < 16 {
		return staticToken{}, errors.New("ingest config: bearer tokens must be at least 16 characters")
	}
	t := staticToken{secret: []byte(secret), scope: ingesttoken.Scope{Sources: []string{ingesttoken.Wildcard}}}
	if scoped {
		t.scope.Sources = strings.Split(sources, "|")
		for _, src := range t.scope.Sources {
			if d := ingesttoken.CheckSource(src); d != "" {
				return staticToken{}, fmt.Errorf("ingest config: a source of token %s…: %s", secret[:4], d)
			}
		}
	}
	return t, nil
}

// tokenCache remembers lookups, found or not, for a TTL: revocation takes
// effect within it, and a flood of wrong tokens costs one query per token
// and TTL, not per request.
type tokenCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	entries map[[32]byte]cachedToken
}

type cachedToken struct {
	scope ingesttoken.Scope
	found bool
	until time.Time
}

func (c *tokenCache) get(hash [32]byte, now time.Time) (cachedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hash]
	if !ok || now.After(e.until) {
		return cachedToken{}, false
	}
	return e, true
}

func (c *tokenCache) put(hash [32]byte, e cachedToken, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCachedTokens {
		clear(c.entries)
	}
	e.until = now.Add(c.ttl)
	c.entries[hash] = e
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
	if h.cfg.Lookup == nil || !strings.HasPrefix(token, ingesttoken.Prefix) {
		return ingesttoken.Scope{}, errUnauthorized
	}
	hash := ingesttoken.Hash(token)
	now := time.Now() // wall time, not the event clock: the TTL bounds revocation
	if e, ok := h.cache.get(hash, now); ok {
		if !e.found {
			return ingesttoken.Scope{}, errUnauthorized
		}
		return e.scope, nil
	}
	scope, err := h.cfg.Lookup.Lookup(ctx, hash)
	switch {
	case errors.Is(err, ingesttoken.ErrUnknown):
		h.cache.put(hash, cachedToken{}, now)
		return ingesttoken.Scope{}, errUnauthorized
	case err != nil:
		return ingesttoken.Scope{}, err
	}
	h.cache.put(hash, cachedToken{scope: scope, found: true}, now)
	return scope, nil
}
