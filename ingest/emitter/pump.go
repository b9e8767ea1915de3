package emitter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

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
