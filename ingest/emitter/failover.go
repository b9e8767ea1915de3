package emitter

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
)

// rejected reports errors that condemn the record itself: sending it again
// would fail again.
func rejected(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord)
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
