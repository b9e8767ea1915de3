package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/internal/testenv"
)

// fakeLookup knows one token and counts the lookups per hash.
type fakeLookup struct {
	live  [32]byte
	mu    sync.Mutex
	calls map[[32]byte]int
	// block, when set, holds every lookup until it is closed or the
	// lookup's context ends; deadlines records whether each had one.
	block     chan struct{}
	deadlines atomic.Int64
}

func (l *fakeLookup) Lookup(ctx context.Context, hash [32]byte) (ingesttoken.Scope, error) {
	l.mu.Lock()
	l.calls[hash]++
	l.mu.Unlock()
	if _, ok := ctx.Deadline(); ok {
		l.deadlines.Add(1)
	}
	if l.block != nil {
		select {
		case <-l.block:
		case <-ctx.Done():
			return ingesttoken.Scope{}, ctx.Err()
		}
	}
	if hash != l.live {
		return ingesttoken.Scope{}, ingesttoken.ErrUnknown
	}
	return ingesttoken.Scope{Sources: []string{"/crm"}}, nil
}

func (l *fakeLookup) SubscriptionAPIs(context.Context, []string) (map[string]string, error) {
	return nil, nil
}

func (l *fakeLookup) count(token string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[ingesttoken.Hash(token)]
}

func lookupHandler(t *testing.T, l *fakeLookup) *Handler {
	t.Helper()
	h, err := New(Config{Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Producer: &kgo.Client{}, Lookup: l})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fakeToken(i int) string {
	s := fmt.Sprintf("%043d", i)
	return ingesttoken.Prefix + s
}

// TestMalformedTokensNeverLookedUp: only a token of the exact shape
// ingesttoken.Generate returns costs a lookup.
func TestMalformedTokensNeverLookedUp(t *testing.T) {
	live, _ := ingesttoken.Generate()
	l := &fakeLookup{live: ingesttoken.Hash(live), calls: map[[32]byte]int{}}
	h := lookupHandler(t, l)
	for _, tok := range []string{
		ingesttoken.Prefix,
		ingesttoken.Prefix + strings.Repeat("A", 42),
		ingesttoken.Prefix + strings.Repeat("A", 44),
		ingesttoken.Prefix + strings.Repeat("A", 42) + "!",
		ingesttoken.Prefix + strings.Repeat("A", 42) + "=",
		ingesttoken.Prefix + strings.Repeat("é", 21) + "A",
		"VEIL_INGEST_" + strings.Repeat("A", 43),
	} {
		if _, err := h.authorize(t.Context(), "Bearer "+tok); !errors.Is(err, errUnauthorized) {
			t.Errorf("authorize(%q) = %v; want errUnauthorized", tok, err)
		}
		if n := l.count(tok); n != 0 {
			t.Errorf("authorize(%q) looked the token up %d times; want 0", tok, n)
		}
	}
	if _, err := h.authorize(t.Context(), "Bearer "+live); err != nil || l.count(live) != 1 {
		t.Errorf("authorize(live token) = %v after %d lookups; want nil after 1", err, l.count(live))
	}
}

// TestUnknownTokensDoNotEvictLiveOnes: more unknown tokens than both
// caches hold leave a live token's cached answer in place, and each
// unknown token is looked up once per TTL.
func TestUnknownTokensDoNotEvictLiveOnes(t *testing.T) {
	live, _ := ingesttoken.Generate()
	l := &fakeLookup{live: ingesttoken.Hash(live), calls: map[[32]byte]int{}}
	h := lookupHandler(t, l)
	if _, err := h.authorize(t.Context(), "Bearer "+live); err != nil {
		t.Fatal(err)
	}
	for i := range maxCachedTokens + maxCachedUnknown + 1 {
		if _, err := h.authorize(t.Context(), "Bearer "+fakeToken(i)); !errors.Is(err, errUnauthorized) {
			t.Fatalf("authorize(unknown token %d) = %v; want errUnauthorized", i, err)
		}
	}
	if _, err := h.authorize(t.Context(), "Bearer "+live); err != nil || l.count(live) != 1 {
		t.Errorf("authorize(live token) after the flood = %v after %d lookups; want nil from the cache (1 lookup)", err, l.count(live))
	}
	last := fakeToken(maxCachedTokens + maxCachedUnknown)
	if _, err := h.authorize(t.Context(), "Bearer "+last); !errors.Is(err, errUnauthorized) || l.count(last) != 1 {
		t.Errorf("authorize(an unknown token again) = %v after %d lookups; want errUnauthorized from the cache (1 lookup)", err, l.count(last))
	}
}

// TestTokenLookupBoundedAndShared: concurrent requests with one token
// share one lookup, the lookup carries a deadline, and a lookup that does
// not answer fails the requests instead of holding them.
func TestTokenLookupBoundedAndShared(t *testing.T) {
	tok, _ := ingesttoken.Generate()
	l := &fakeLookup{live: ingesttoken.Hash(tok), calls: map[[32]byte]int{}, block: make(chan struct{})}
	h := lookupHandler(t, l)

	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := h.authorize(t.Context(), "Bearer "+tok)
			errs <- err
		}()
	}
	testenv.Deadline(t, lookupTimeout, func() error {
		if c := l.count(tok); c != 1 {
			return fmt.Errorf("lookups = %d; want 1", c)
		}
		return nil
	})
	for range n {
		if err := <-errs; err == nil || errors.Is(err, errUnauthorized) {
			t.Errorf("authorize with a lookup that never answers = %v; want a lookup error", err)
		}
	}
	if c, d := l.count(tok), l.deadlines.Load(); c > n || d != int64(c) {
		t.Errorf("%d lookups, %d of them with a deadline; want every one with a deadline", c, d)
	}
}

// TestStaticTokenErrorNamesPosition: a bad bootstrap token is named by its
// place in the list, never by part of its secret.
func TestStaticTokenErrorNamesPosition(t *testing.T) {
	err := Config{Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Producer: &kgo.Client{},
		Tokens: []string{"first-token-0123456789", "Zq9xsecretvalue0123=/a*b"}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "bearer token 2") || strings.Contains(err.Error(), "Zq9x") {
		t.Errorf("Validate() = %v; want an error naming bearer token 2 and no part of its secret", err)
	}
}
