package ingest

import (
	"sync"
	"time"
)

// ttlCache remembers answers for a TTL, at most max of them. When full, one
// entry picked at random makes room for a new one: a flood of new keys
// displaces the cache a little at a time, never empties it at once.
type ttlCache[K comparable, V any] struct {
	mu      sync.Mutex
	ttl     time.Duration
	max     int
	entries map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v     V
	until time.Time
}

func newTTLCache[K comparable, V any](ttl time.Duration, max int) *ttlCache[K, V] {
	return &ttlCache[K, V]{ttl: ttl, max: max, entries: make(map[K]ttlEntry[V])}
}

func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || now.After(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[K, V]) put(k K, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		for old := range c.entries { // map order is unspecified: a random victim
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = ttlEntry[V]{v: v, until: now.Add(c.ttl)}
}
