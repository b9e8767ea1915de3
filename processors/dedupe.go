package processors

import (
	"github.com/cespare/xxhash/v2"
)

// eventKey is a 128-bit hash of (source, id), the dedupe key. Two 64-bit
// xxhash digests with different seeds make an accidental collision
// negligible even across billions of events.
type eventKey [2]uint64

func keyOf(source, id string) eventKey {
	var a, b xxhash.Digest
	a.ResetWithSeed(0x9e3779b97f4a7c15)
	b.ResetWithSeed(0xc2b2ae3d27d4eb4f)
	for _, d := range [...]*xxhash.Digest{&a, &b} {
		_, _ = d.WriteString(source)
		_, _ = d.Write([]byte{0})
		_, _ = d.WriteString(id)
	}
	return eventKey{a.Sum64(), b.Sum64()}
}

// seenSet remembers the events one partition has written: for each, the
// Kafka offset it was written from (so that a record already in ClickHouse is
// told apart from a duplicate of it) and the hour of its time (so that
// entries older than the late-event window can be dropped: an event that old
// is refused before dedupe, so forgetting it is safe).
type seenSet struct {
	m map[eventKey]seenEntry
}

type seenEntry struct {
	offset int64
	hour   uint32 // event hour since the Unix epoch
}

func newSeenSet() *seenSet { return &seenSet{m: make(map[eventKey]seenEntry)} }

// lookup returns the offset the event was written from, if it was.
func (s *seenSet) lookup(k eventKey) (int64, bool) {
	e, ok := s.m[k]
	return e.offset, ok
}

// add records the event; the earliest offset wins.
func (s *seenSet) add(k eventKey, offset int64, hour uint32) {
	if e, ok := s.m[k]; ok && e.offset <= offset {
		return
	}
	s.m[k] = seenEntry{offset: offset, hour: hour}
}

func (s *seenSet) len() int { return len(s.m) }

// prune drops entries for events before minHour and returns how many.
func (s *seenSet) prune(minHour uint32) int {
	n := 0
	for k, e := range s.m {
		if e.hour < minHour {
			delete(s.m, k)
			n++
		}
	}
	return n
}
