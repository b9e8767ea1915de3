package caddyveil

import (
	"sync"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

// negativeCache remembers key hashes that Redis does not know, for a short
// time, so a flood of made-up keys (well-formed ones: the checksum is
// public) costs one lookup per key and TTL rather than one per request.
// It is bounded: when full it starts over, which only costs lookups.
type negativeCache struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	until map[string]time.Time
}

func newNegativeCache(max int, ttl time.Duration) *negativeCache {
	return &negativeCache{ttl: ttl, max: max, until: make(map[string]time.Time)}
}

func (c *negativeCache) has(hash string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.until[hash]
	if ok && !now.Before(u) {
		delete(c.until, hash)
		return false
	}
	return ok
}

func (c *negativeCache) add(hash string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.until) >= c.max {
		clear(c.until)
	}
	c.until[hash] = now.Add(c.ttl)
}

// knownKey is a key and its subscription as last read from Redis.
type knownKey struct {
	key enforcement.KeyRecord
	sub enforcement.SubscriptionRecord
	at  time.Time
}

// knownCache keeps the last good records of keys in use, for the short
// grace during which a key keeps working while Redis is unreachable (the
// client-side cache is dropped with the connection). Entries are
// refreshed at most once a second per key, so the hot path mostly reads.
type knownCache struct {
	mu   sync.RWMutex
	max  int
	keys map[string]knownKey
}

func newKnownCache(max int) *knownCache {
	return &knownCache{max: max, keys: make(map[string]knownKey)}
}

func (c *knownCache) put(hash string, k enforcement.KeyRecord, s enforcement.SubscriptionRecord, now time.Time) {
	c.mu.RLock()
	e, ok := c.keys[hash]
	c.mu.RUnlock()
	if ok && now.Sub(e.at) < time.Second {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max {
		clear(c.keys)
	}
	c.keys[hash] = knownKey{key: k, sub: s, at: now}
}

// get returns the records of hash if they were read within grace.
func (c *knownCache) get(hash string, now time.Time, grace time.Duration) (knownKey, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.keys[hash]
	if !ok || now.Sub(e.at) > grace {
		return knownKey{}, false
	}
	return e, true
}
