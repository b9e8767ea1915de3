// Package ingesttoken is the ingest token shared by the control plane, which
// issues and revokes tokens, and the ingest service, which checks them: the
// token's format and hash, its scope (the event sources and APIs it may
// write) and the lookup of a token's scope in Postgres.
//
// A token is "veil_ingest_" followed by 43 base64url characters (256 random
// bits). Only its SHA-256 is stored: with that much entropy a plain hash
// cannot be reversed, and lookups stay one indexed equality.
package ingesttoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/internal/ingesttoken/internal/db"
)

// Prefix starts every issued token, so that a leaked one is recognisable
// (secret scanners) and ingest can tell it from a bootstrap token.
const Prefix = "veil_ingest_"

// ShownPrefixLen is how much of a token its listing shows.
const ShownPrefixLen = len(Prefix) + 6

// GatewaySourcePrefix starts the CloudEvents source of every gateway's own
// events (/gateway/<host> unless configured otherwise). A scope entry matches
// such a source only when it starts with this prefix itself: a wildcard
// never lets a producer pass its usage off as the gateway's.
const GatewaySourcePrefix = "/gateway/"

// Wildcard ends a scope entry that matches every source starting with what
// precedes it; "*" alone matches every source but the gateway's.
const Wildcard = "*"

// ErrUnknown reports a token that is not issued or was revoked.
var ErrUnknown = errors.New("unknown or revoked ingest token")

// Generate returns a new token.
func Generate() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate ingest token: %w", err)
	}
	return Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenLen is the length of every token Generate returns: the prefix and
// 32 bytes in unpadded base64url.
var tokenLen = len(Prefix) + base64.RawURLEncoding.EncodedLen(32)

// WellFormed reports whether token has the exact shape of one Generate
// returns, so that ingest asks Postgres about nothing else.
func WellFormed(token string) bool {
	rest, ok := strings.CutPrefix(token, Prefix)
	if !ok || len(token) != tokenLen {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Hash is what is stored of a token.
func Hash(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// Scope is what a token may write.
type Scope struct {
	// Sources the token may write; an entry ending in * is a prefix.
	Sources []string
	// APIIDs the token may write for; empty means any API.
	APIIDs []string
}

// AllowsSource reports whether the scope covers an event source.
func (s Scope) AllowsSource(source string) bool {
	for _, p := range s.Sources {
		if matchSource(p, source) {
			return true
		}
	}
	return false
}

func matchSource(pattern, source string) bool {
	prefix, wild := strings.CutSuffix(pattern, Wildcard)
	if !wild {
		return pattern == source
	}
	if strings.HasPrefix(source, GatewaySourcePrefix) && !strings.HasPrefix(prefix, GatewaySourcePrefix) {
		return false
	}
	return strings.HasPrefix(source, prefix)
}

// AllowsAPI reports whether the scope covers an API id.
func (s Scope) AllowsAPI(apiID string) bool {
	if len(s.APIIDs) == 0 {
		return true
	}
	for _, id := range s.APIIDs {
		if id == apiID {
			return true
		}
	}
	return false
}

// CheckSource reports what is wrong with a scope entry for sources, or "".
func CheckSource(p string) string {
	switch {
	case p == "":
		return "must not be empty"
	case len(p) > 256:
		return "must be at most 256 characters"
	case strings.Contains(strings.TrimSuffix(p, Wildcard), Wildcard):
		return "may hold * only at its end"
	}
	return ""
}

// Store looks tokens up in Postgres.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Lookup returns the scope of the live token with hash, or ErrUnknown.
func (s *Store) Lookup(ctx context.Context, hash [32]byte) (Scope, error) {
	row, err := db.New(s.pool).IngestTokenScopeByHash(ctx, hash[:])
	if errors.Is(err, pgx.ErrNoRows) {
		return Scope{}, ErrUnknown
	}
	if err != nil {
		return Scope{}, fmt.Errorf("look up ingest token: %w", err)
	}
	return Scope(row), nil
}

// SubscriptionAPIs returns the API id of each of the subscriptions ids
// (lower-case UUIDs) names; an id that is no subscription is absent. Ingest
// holds a token scoped to APIs to the subscriptions of those APIs.
func (s *Store) SubscriptionAPIs(ctx context.Context, ids []string) (map[string]string, error) {
	rows, err := db.New(s.pool).SubscriptionAPIIDs(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("look up subscriptions: %w", err)
	}
	out := make(map[string]string, len(ids))
	for _, r := range rows {
		out[r.ID] = r.APIID
	}
	return out, nil
}
