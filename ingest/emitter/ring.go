package emitter

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// flightState is where a produced record stands.
type flightState uint8

const (
	flightPending  flightState = iota
	flightAcked                // Kafka acknowledged it
	flightFailed               // the broker or client failed it: an outage
	flightRejected             // Kafka refused the record itself: never retried
)

// flight is a record handed to the client.
type flight struct {
	rec   *kgo.Record
	seg   *segment // the spool segment it was replayed from; nil if from memory
	end   int64    // offset in seg just past the record
	at    time.Time
	state flightState
}

// ring holds produced records in produce order until the producer loop
// reaps their outcome. Promises settle entries from the client's goroutine;
// the loop pops them, so that replay progress only ever covers a prefix of
// acknowledged records.
type ring struct {
	mu     sync.Mutex
	q      []flight
	head   int
	first  uint64 // sequence number of q[head]
	direct int    // entries from memory, not the spool
	failed error  // first failure since the last reset
	n      atomic.Int64
}

// push appends f and returns its sequence number.
func (r *ring) push(f flight) uint64 {
	r.mu.Lock()
	seq := r.first + uint64(len(r.q)-r.head)
	r.q = append(r.q, f)
	if f.seg == nil {
		r.direct++
	}
	r.n.Add(1)
	r.mu.Unlock()
	return seq
}

// settle records a promise's outcome. Outcomes of entries dropped by reset
// are ignored: their records were spooled or will be replayed again.
func (r *ring) settle(seq uint64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq < r.first {
		return
	}
	i := r.head + int(seq-r.first)
	if i >= len(r.q) {
		return
	}
	switch {
	case err == nil:
		r.q[i].state = flightAcked
	case rejected(err):
		r.q[i].state = flightRejected
	default:
		r.q[i].state = flightFailed
		if r.failed == nil {
			r.failed = err
		}
	}
}

// pop moves the settled prefix into out and reports the first failure and
// when the oldest pending record was produced.
func (r *ring) pop(out []flight) (_ []flight, oldest time.Time, failed error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.head < len(r.q) {
		f := &r.q[r.head]
		if f.state != flightAcked && f.state != flightRejected {
			break
		}
		out = append(out, *f)
		if f.seg == nil {
			r.direct--
		}
		*f = flight{}
		r.head++
		r.first++
		r.n.Add(-1)
	}
	switch {
	case r.head == len(r.q):
		r.q, r.head = r.q[:0], 0
	case r.head > 1024 && r.head > len(r.q)/2:
		n := copy(r.q, r.q[r.head:])
		clear(r.q[n:])
		r.q, r.head = r.q[:n], 0
	}
	if r.head < len(r.q) {
		oldest = r.q[r.head].at
	}
	return out, oldest, r.failed
}

// reset gives up on every entry and returns those not yet popped, in
// produce order.
func (r *ring) reset() []flight {
	r.mu.Lock()
	defer r.mu.Unlock()
	rest := make([]flight, len(r.q)-r.head)
	copy(rest, r.q[r.head:])
	r.first += uint64(len(rest))
	clear(r.q)
	r.q, r.head, r.direct, r.failed = r.q[:0], 0, 0, nil
	r.n.Store(0)
	return rest
}

func (r *ring) len() int { return int(r.n.Load()) }

func (r *ring) directLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.direct
}
