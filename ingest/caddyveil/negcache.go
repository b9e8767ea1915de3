package caddyveil

import (
	"sync"
	"time"
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
