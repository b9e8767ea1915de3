package emitter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
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

// rejected reports errors that condemn the record itself: sending it again
// would fail again.
func rejected(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord)
}

// pump is the producer loop's state. Only the loop's goroutine touches it.
type pump struct {
	sp        *spool
	now       time.Time
	spooling  bool // records go to the spool, not to Kafka
	available bool // the broker answered since the last trouble
	paused    bool // intake waits while replay drains the spool's tail
	probing   bool
	probeC    chan error
	nextProbe time.Time // also the earliest replay after a trouble
	backoff   time.Duration
	// ctx is given to every Produce; cancelling it makes the client fail
	// what it safely can of the records given up on.
	ctx    context.Context
	cancel context.CancelFunc

	closing       *closeRequest
	droppedBefore uint64 // drops (other than closed) when Close began
	wrote         bool   // records appended since the last flush
	lastSync      time.Time
	lastProgress  time.Time
	popped        []flight
	loggedDrops   [numDrops]uint64
	lastDropLog   time.Time
}

func (e *Emitter) startPump(sp *spool) {
	p := &e.p
	p.sp = sp
	p.now = time.Now()
	p.probeC = make(chan error, 1)
	// The emitter outlives any request: its produce context starts fresh.
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.lastSync, p.lastProgress, p.lastDropLog = p.now, p.now, p.now
	p.available = true
	if !sp.empty() {
		// A previous run left records: they go first, and everything
		// emitted meanwhile queues behind them in the spool.
		p.spooling, p.available = true, false
		e.log.Info("replaying usage events spooled by a previous run",
			"spool_dir", e.cfg.SpoolDir, "segments", len(sp.segs), "bytes", sp.bytes)
	}
	e.publish()
}

// run is the producer loop.
func (e *Emitter) run() {
	p := &e.p
	tick := time.NewTicker(e.tick)
	defer tick.Stop()
	for {
		p.now = time.Now()
		e.reap()
		busy := e.intake()
		if e.replay() {
			busy = true
		}
		e.flushSpool()
		e.handoff()
		if p.closing != nil && e.finishClose() {
			return
		}
		e.maybeProbe()

		var memC, spillC <-chan Record
		if e.acceptMem() {
			memC = e.mem
		}
		if e.acceptSpill() {
			spillC = e.spill
		}
		var closingDone <-chan struct{}
		if p.closing != nil {
			closingDone = p.closing.ctx.Done()
		}
		if busy {
			select {
			case <-tick.C:
				e.onTick()
			case err := <-p.probeC:
				e.onProbe(err)
			case req := <-e.closeC:
				e.onClose(req)
			default:
			}
			continue
		}
		select {
		case r := <-memC:
			e.take(r, false)
		case r := <-spillC:
			e.take(r, true)
		case <-e.wake:
		case <-tick.C:
			e.onTick()
		case err := <-p.probeC:
			e.onProbe(err)
		case req := <-e.closeC:
			e.onClose(req)
		case <-closingDone:
		}
	}
}

// acceptMem reports whether the loop takes records from the memory queue
// now: not while replay drains the spool's tail, and, when producing
// directly, not beyond the in-flight limit.
func (e *Emitter) acceptMem() bool {
	p := &e.p
	if p.paused && p.closing == nil {
		return false
	}
	return p.spooling || e.fl.len() < e.maxInFlight
}

func (e *Emitter) acceptSpill() bool {
	return !e.p.paused || e.p.closing != nil
}

// intake moves queued records, memory first because it holds the older
// ones. It reports whether it stopped with records left.
func (e *Emitter) intake() bool {
	for range batch {
		if e.acceptMem() {
			select {
			case r := <-e.mem:
				e.take(r, false)
				continue
			default:
			}
		}
		if e.acceptSpill() {
			select {
			case r := <-e.spill:
				e.take(r, true)
				continue
			default:
			}
		}
		return false
	}
	return true
}

// take routes one queued record.
func (e *Emitter) take(r Record, fromSpill bool) {
	p := &e.p
	if fromSpill {
		// The memory queue overflowed. The records still in it are
		// older than r: they go to the spool first. Those already in
		// flight finish before the spool replays (see replay).
		if !p.spooling {
			e.startSpooling()
		}
		for range cap(e.mem) {
			select {
			case m := <-e.mem:
				e.spoolRecord(m.Key, m.Value)
				continue
			default:
			}
			break
		}
	}
	if p.spooling {
		e.spoolRecord(r.Key, r.Value)
		return
	}
	e.produce(&kgo.Record{Topic: e.cfg.Topic, Key: r.Key, Value: r.Value, Headers: e.headers}, nil, 0)
}

// produce hands rec to the client, tracked in the ring.
func (e *Emitter) produce(rec *kgo.Record, seg *segment, end int64) {
	seq := e.fl.push(flight{rec: rec, seg: seg, end: end, at: e.p.now})
	replayed := seg != nil
	// TryProduce: a full client buffer fails the record rather than
	// blocking the loop, and reads as an outage.
	e.cl.TryProduce(e.p.ctx, rec, func(_ *kgo.Record, err error) {
		if err == nil {
			e.nProduced.Add(1)
			e.mProduced.Inc()
			if replayed {
				e.nReplayed.Add(1)
				e.mReplayed.Inc()
			}
		}
		e.fl.settle(seq, err)
		select {
		case e.wake <- struct{}{}:
		default:
		}
	})
}

// reap processes settled records and detects trouble.
func (e *Emitter) reap() {
	p := &e.p
	var oldest time.Time
	var failed error
	p.popped, oldest, failed = e.fl.pop(p.popped[:0])
	progressed := false
	for i := range p.popped {
		f := &p.popped[i]
		if f.state == flightRejected {
			e.drop(dropRejected, 1)
		}
		if f.seg != nil {
			p.sp.acked(f.seg, f.end)
			progressed = true
		}
		*f = flight{}
	}
	if progressed {
		p.backoff = 0
		e.publish()
	}
	switch {
	case failed != nil:
		e.trouble(failed)
	case !oldest.IsZero() && p.now.Sub(oldest) > e.cfg.StallTimeout:
		e.trouble(errStalled)
	}
}

// trouble switches to spooling after Kafka failed: the records given up
// on are spooled again (direct ones) or will be read again (replayed ones),
// and the broker is probed after a backoff.
func (e *Emitter) trouble(cause error) {
	p := &e.p
	p.cancel()
	p.ctx, p.cancel = context.WithCancel(context.Background())
	rest := e.fl.reset()
	e.startSpooling()
	copied, rewind := 0, false
	for _, f := range rest {
		switch {
		case f.seg != nil:
			rewind = true
		case f.state == flightRejected:
			e.drop(dropRejected, 1)
		case f.state == flightPending, f.state == flightFailed:
			// It may still land: then the copy is a duplicate the
			// processors drop by (source, id).
			e.spoolRecord(f.rec.Key, f.rec.Value)
			copied++
		}
	}
	if rewind {
		p.sp.rewind()
	}
	p.paused = false
	e.setAvailable(false)
	p.backoff = min(max(2*p.backoff, e.cfg.ProbeInterval), maxBackoff*e.cfg.ProbeInterval)
	p.nextProbe = p.now.Add(p.backoff)
	e.log.Warn("kafka is not acknowledging usage events; spooling them to disk",
		"err", cause, "in_flight_spooled", copied, "retry_in", p.backoff)
}

func (e *Emitter) startSpooling() {
	e.p.spooling = true
	e.spooling.Store(true)
}

func (e *Emitter) setAvailable(ok bool) {
	e.p.available = ok
	e.available.Store(ok)
	if ok {
		e.mAvailable.Set(1)
	} else {
		e.mAvailable.Set(0)
	}
}

// spoolRecord appends a record to the spool, counting a drop on failure.
func (e *Emitter) spoolRecord(key, value []byte) {
	p := &e.p
	p.wrote = true
	err := p.sp.append(key, value)
	switch {
	case err == nil:
		e.nSpooled.Add(1)
		e.mSpooled.Inc()
	case errors.Is(err, errSpoolFull):
		e.drop(dropSpoolFull, 1)
	case errors.Is(err, errRecordTooLarge):
		e.drop(dropRejected, 1)
	default:
		e.drop(dropSpoolError, 1)
		e.log.Error("write usage event spool", "err", err)
	}
}

// flushSpool hands the records spooled in this step to the OS, and fsyncs
// them under FsyncAlways.
func (e *Emitter) flushSpool() {
	p := &e.p
	if !p.wrote {
		return
	}
	p.wrote = false
	var lost int
	var err error
	if e.fsync == fsyncAlways {
		lost, err = p.sp.sync()
	} else {
		lost, err = p.sp.flush()
	}
	if err != nil {
		e.drop(dropSpoolError, lost)
		e.log.Error("write usage event spool", "err", err, "lost", lost)
	}
	e.publish()
}

// replay produces spooled records while the broker is available. Records
// that were in flight from memory go first, so replay waits for them. It
// reports whether it stopped with records left.
func (e *Emitter) replay() bool {
	p := &e.p
	if !p.spooling || !p.available || p.closing != nil || p.now.Before(p.nextProbe) || e.fl.directLen() > 0 {
		return false
	}
	for range batch {
		if e.fl.len() >= e.maxInFlight {
			return false
		}
		key, value, seg, end, ok := p.sp.next()
		if !ok {
			e.publish()
			return false
		}
		e.produce(&kgo.Record{Topic: e.cfg.Topic, Key: key, Value: value, Headers: e.headers}, seg, end)
	}
	return true
}

// handoff ends spooling once replay has caught up. The active segment is
// sealed so it can replay; when its tail is short, intake pauses so that
// replay catches up for good instead of chasing new records forever. With
// the spool empty and nothing in flight, records go to Kafka directly.
func (e *Emitter) handoff() {
	p := &e.p
	if !p.spooling || !p.available || p.closing != nil || e.fl.len() > 0 || p.sp.replayable() {
		return
	}
	if n := p.sp.activeRecords(); n > 0 {
		p.paused = n <= e.pauseRecords
		if _, err := p.sp.seal(); err != nil {
			e.log.Error("seal usage event spool segment", "err", err)
		}
		return
	}
	if !p.sp.empty() {
		return
	}
	// Emit goes back to the memory queue; wait out calls that still saw
	// the overflow flag, so that their records reach the spill queue
	// before the loop looks at it.
	e.overflow.Store(false)
	e.quiesce(time.Millisecond)
	p.paused = false
	if len(e.spill) > 0 {
		return
	}
	p.spooling = false
	e.spooling.Store(false)
	p.backoff = 0
	e.publish()
	e.log.Info("usage event spool drained; producing to kafka directly")
}

func (e *Emitter) maybeProbe() {
	p := &e.p
	if !p.spooling || p.available || p.probing || p.closing != nil || p.now.Before(p.nextProbe) {
		return
	}
	p.probing = true
	go func() {
		// The probe belongs to the emitter, not to a request.
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.StallTimeout)
		defer cancel()
		p.probeC <- broker.Ping(ctx, e.cl)
	}()
}

func (e *Emitter) onProbe(err error) {
	p := &e.p
	p.probing = false
	if err != nil {
		p.backoff = min(max(2*p.backoff, e.cfg.ProbeInterval), maxBackoff*e.cfg.ProbeInterval)
		p.nextProbe = p.now.Add(p.backoff)
		return
	}
	e.setAvailable(true)
	// After failed requests the client waits for its next metadata
	// refresh, by default up to 5s away, before producing again.
	e.cl.ForceMetadataRefresh()
	e.log.Info("kafka answers again; replaying spooled usage events",
		"segments", len(p.sp.segs), "spool_bytes", p.sp.bytes)
}

func (e *Emitter) onTick() {
	p := &e.p
	p.now = time.Now()
	if e.fsync == fsyncInterval && p.now.Sub(p.lastSync) >= e.cfg.FsyncInterval {
		p.lastSync = p.now
		if lost, err := p.sp.sync(); err != nil {
			e.drop(dropSpoolError, lost)
			e.log.Error("fsync usage event spool", "err", err, "lost", lost)
		}
	}
	if p.now.Sub(p.lastProgress) >= progressEvery {
		p.lastProgress = p.now
		if err := p.sp.saveProgress(); err != nil {
			e.log.Warn("save usage event spool progress", "err", err)
		}
	}
	e.publish()
	e.logDrops(false)
}

// publish updates the gauges and the spool figures of Stats.
func (e *Emitter) publish() {
	p := &e.p
	e.spoolBytes.Store(p.sp.bytes)
	e.spoolSegments.Store(int64(len(p.sp.segs)))
	e.mSpoolBytes.Set(float64(p.sp.bytes))
	e.mQueue.Set(float64(len(e.mem) + len(e.spill)))
	e.available.Store(p.available)
	if p.available {
		e.mAvailable.Set(1)
	} else {
		e.mAvailable.Set(0)
	}
}

// logDrops logs records dropped since the last line, at most every
// dropLogEvery unless final.
func (e *Emitter) logDrops(final bool) {
	p := &e.p
	if !final && p.now.Sub(p.lastDropLog) < dropLogEvery {
		return
	}
	for i := range numDrops {
		n := e.nDropped[i].Load()
		if d := n - p.loggedDrops[i]; d > 0 {
			p.loggedDrops[i] = n
			p.lastDropLog = p.now
			e.log.Warn("usage events dropped", "reason", string(dropReasons[i]), "count", d, "total", n)
		}
	}
}

func (e *Emitter) onClose(req *closeRequest) {
	p := &e.p
	p.closing = req
	p.paused = false
	for i := range numDrops {
		if dropIndex(i) != dropClosed {
			p.droppedBefore += e.nDropped[i].Load()
		}
	}
}

// finishClose ends the loop once every record is acknowledged or spooled;
// when Close's context has ended, it spools what is left. It reports
// whether the loop is done.
func (e *Emitter) finishClose() bool {
	p := &e.p
	idle := len(e.mem) == 0 && len(e.spill) == 0 && e.fl.directLen() == 0
	if !idle && p.closing.ctx.Err() == nil {
		return false
	}
	if !idle {
		// Out of time: what Kafka has not acknowledged goes to disk, in
		// order: records in flight, then the queues.
		rest := e.fl.reset()
		e.startSpooling()
		for _, f := range rest {
			if f.seg == nil && (f.state == flightPending || f.state == flightFailed) {
				e.spoolRecord(f.rec.Key, f.rec.Value)
			}
		}
		for _, q := range []chan Record{e.mem, e.spill} {
			for len(q) > 0 {
				r := <-q
				e.spoolRecord(r.Key, r.Value)
			}
		}
	}
	p.cancel()
	var errs []error
	if err := p.sp.close(); err != nil {
		errs = append(errs, err)
	}
	e.publish()
	e.mQueue.Set(0)
	e.logDrops(true)
	var lost uint64
	for i := range numDrops {
		if dropIndex(i) != dropClosed {
			lost += e.nDropped[i].Load()
		}
	}
	if lost -= p.droppedBefore; lost > 0 {
		errs = append(errs, fmt.Errorf("%d records: %w", lost, ErrRecordsDropped))
	}
	if len(errs) > 0 {
		e.closeErr = fmt.Errorf("close emitter: %w", errors.Join(errs...))
	}
	close(e.done)
	return true
}
