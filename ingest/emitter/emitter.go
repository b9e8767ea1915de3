// Package emitter carries the gateway's usage events to Kafka without ever
// making a request wait for the broker (DESIGN.md, guarantee 1).
//
// Emit only hands the record to a bounded in-memory queue. A producer loop
// sends queued records to Kafka. When Kafka stops acknowledging them (a
// produce error, or the oldest record waiting longer than StallTimeout) the
// loop switches to spooling: the records not yet acknowledged and every
// record queued after them are appended, in order, to segment files on
// disk. While spooling, the loop probes the broker; once it answers, the
// segments are replayed oldest first and deleted when all their records are
// acknowledged, and when the spool is empty records go straight to Kafka
// again. Segments left by a previous run, after a crash or a shutdown with
// the broker down, are replayed before anything newer.
//
// # Delivery
//
// At least once. A record may reach Kafka twice: when it was in flight as
// the loop gave up on the broker (its copy is spooled, and the original may
// still land), or when the process crashed during a replay (replay resumes
// from the last saved progress, at most ~250ms of acknowledged records
// behind, plus what was in flight). A resent record is byte for byte the
// same CloudEvent with the same id, so the processors' dedupe on
// (source, id) makes the copy harmless.
//
// # Order
//
// Records with the same key (subject) reach Kafka in the order they were
// emitted, counting a duplicate at its first arrival, except that
//   - when Kafka fails a batch with an error (rather than going away) while
//     later batches of the same partition are already in flight, the failed
//     records go to the spool and land after those;
//   - when records in flight as the memory queue overflowed fail later,
//     they land behind the overflow;
//   - an Emit racing the switch back from spooling may land behind records
//     emitted just after it.
//
// A replayed record carries the replay time as its Kafka timestamp: the
// event's own time field is the one that counts.
//
// # Loss
//
// A record is dropped, counted in veil_gateway_events_dropped_total{reason}
// and logged (at most every 10 seconds per reason), only when both queues
// are full (queue_full), the spool reached MaxSpoolBytes (spool_full),
// writing the spool failed (spool_error), Kafka refused the record itself,
// for example as too large (rejected), or Emit was called after Close
// (closed). Close returns only when every record emitted before it is
// acknowledged or on disk.
package emitter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
)

// Defaults for Config.
const (
	DefaultMemoryRecords = 100_000
	DefaultSegmentBytes  = 64 << 20
	DefaultMaxSpoolBytes = 1 << 30
	DefaultFsyncInterval = time.Second
	DefaultStallTimeout  = 5 * time.Second
	DefaultProbeInterval = time.Second
)

// Fsync policies for Config.Fsync.
const (
	// FsyncAlways fsyncs after every batch of records the producer loop
	// spools: a power loss loses nothing that reached the spool.
	FsyncAlways = "always"
	// FsyncInterval fsyncs every FsyncInterval: a power loss loses at most
	// that much spooled traffic.
	FsyncInterval = "interval"
	// FsyncNever leaves flushing to the OS; only Close fsyncs.
	FsyncNever = "never"
)

// contentType labels each record the way the ingest service does, so both
// producers write the same format to the topic.
const contentType = "application/cloudevents+json; charset=utf-8"

// maxBackoff bounds the wait between probes and replays while Kafka keeps
// failing, as a multiple of ProbeInterval.
const maxBackoff = 32

// progressEvery is how often replay progress is saved; it bounds what a
// crash makes the next run resend.
const progressEvery = 250 * time.Millisecond

// dropLogEvery rate-limits the log line about dropped records.
const dropLogEvery = 10 * time.Second

// batch bounds the records the producer loop moves in one step before it
// looks at acknowledgements, timers and Close again.
const batch = 4096

var (
	// ErrSpoolLocked is returned by New when another emitter holds the spool
	// directory. Two emitters must never share one: share the emitter
	// instead (in Caddy, through a caddy.UsagePool keyed by the directory).
	ErrSpoolLocked = errors.New("spool dir is used by another emitter")
	// ErrRecordsDropped is returned by Close when records emitted before it
	// could be neither acknowledged nor spooled.
	ErrRecordsDropped = errors.New("usage records dropped")
	// errStalled is the trouble reported when acknowledgements stop.
	errStalled = errors.New("kafka did not acknowledge records within the stall timeout")
)

// Record is one usage event for Kafka.
type Record struct {
	// Key is the event's subject: it picks the partition, so one
	// subscription's events stay in order.
	Key []byte
	// Value is one CloudEvent, structured JSON.
	Value []byte
}

// Config configures an Emitter.
type Config struct {
	// Client produces the records. Build it with broker.NewClient (an
	// idempotent, acks=all producer) and close it after Close returns: the
	// emitter neither configures nor closes it. Give the emitter a client
	// of its own: it keeps up to 90% of the client's MaxBufferedRecords
	// (at most 50,000) in flight, and a client whose buffer another user
	// filled refuses records, which the emitter takes for an outage.
	Client *kgo.Client
	// Topic receives the records. Default veil.usage.raw.
	Topic string
	// MemoryRecords bounds the queue between Emit and the producer loop,
	// and separately the overflow queue in front of the spool. Default
	// 100,000 each.
	MemoryRecords int
	// SpoolDir holds the spool. Required; created if missing. One emitter
	// at a time may use it (see ErrSpoolLocked).
	SpoolDir string
	// SegmentBytes is the size at which a spool segment file is closed and a
	// new one started. Default 64 MiB.
	SegmentBytes int64
	// MaxSpoolBytes bounds the spool on disk; past it new records are
	// dropped, counted and logged. Default 1 GiB.
	MaxSpoolBytes int64
	// Fsync is FsyncAlways, FsyncInterval (default) or FsyncNever.
	Fsync string
	// FsyncInterval is the period of FsyncInterval. Default 1s.
	FsyncInterval time.Duration
	// StallTimeout is how long the oldest record may wait for Kafka's
	// acknowledgement before the broker counts as unreachable and records
	// go to the spool. It also bounds a broker probe. Default 5s.
	StallTimeout time.Duration
	// ProbeInterval is how often the broker is probed while spooling; the
	// wait doubles after each failed replay, up to 32 times. Default 1s.
	ProbeInterval time.Duration
	// Logger receives warnings about outages and drops. Default: discard.
	Logger *slog.Logger
	// Metrics receives the veil_gateway_* metrics. Default: a private set.
	Metrics *metrics.Set
}

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	switch {
	case c.Client == nil:
		return errors.New("emitter config: kafka client is required")
	case c.SpoolDir == "":
		return errors.New("emitter config: spool dir is required")
	case c.MemoryRecords < 0, c.SegmentBytes < 0, c.MaxSpoolBytes < 0, c.FsyncInterval < 0,
		c.StallTimeout < 0, c.ProbeInterval < 0:
		return errors.New("emitter config: sizes and durations must not be negative")
	}
	if _, err := parseFsync(c.Fsync); err != nil {
		return err
	}
	return nil
}

func (c *Config) setDefaults() {
	c.Topic = cmp.Or(c.Topic, broker.TopicUsageRaw)
	c.MemoryRecords = cmp.Or(c.MemoryRecords, DefaultMemoryRecords)
	c.SegmentBytes = cmp.Or(c.SegmentBytes, DefaultSegmentBytes)
	c.MaxSpoolBytes = cmp.Or(c.MaxSpoolBytes, DefaultMaxSpoolBytes)
	c.FsyncInterval = cmp.Or(c.FsyncInterval, DefaultFsyncInterval)
	c.StallTimeout = cmp.Or(c.StallTimeout, DefaultStallTimeout)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, DefaultProbeInterval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
}

type fsyncMode int

const (
	fsyncInterval fsyncMode = iota
	fsyncAlways
	fsyncNever
)

func parseFsync(s string) (fsyncMode, error) {
	switch s {
	case "", FsyncInterval:
		return fsyncInterval, nil
	case FsyncAlways:
		return fsyncAlways, nil
	case FsyncNever:
		return fsyncNever, nil
	}
	return 0, fmt.Errorf("emitter config: fsync %q: want %s, %s or %s", s, FsyncAlways, FsyncInterval, FsyncNever)
}

// DropReason says why a record was dropped.
type DropReason string

// Reasons for dropping a record; the reason label of
// veil_gateway_events_dropped_total.
const (
	DropQueueFull  DropReason = "queue_full"
	DropSpoolFull  DropReason = "spool_full"
	DropSpoolError DropReason = "spool_error"
	DropRejected   DropReason = "rejected"
	DropClosed     DropReason = "closed"
)

type dropIndex int

const (
	dropQueueFull dropIndex = iota
	dropSpoolFull
	dropSpoolError
	dropRejected
	dropClosed
	numDrops
)

var dropReasons = [numDrops]DropReason{DropQueueFull, DropSpoolFull, DropSpoolError, DropRejected, DropClosed}

// Stats is a snapshot of an emitter's counters.
type Stats struct {
	// Emitted counts Emit calls.
	Emitted uint64
	// Queued is how many records wait in the memory and overflow queues.
	Queued int
	// InFlight is how many records were handed to Kafka and are not yet
	// acknowledged.
	InFlight int
	// Produced counts records Kafka acknowledged, replays and duplicates
	// included.
	Produced uint64
	// Spooled counts records written to the spool.
	Spooled uint64
	// Replayed counts spooled records Kafka acknowledged.
	Replayed uint64
	// Dropped counts lost records by reason.
	Dropped map[DropReason]uint64
	// SpoolBytes and SpoolSegments describe the spool on disk.
	SpoolBytes    int64
	SpoolSegments int
	// Spooling is true while records go to the spool rather than to Kafka.
	Spooling bool
	// BrokerAvailable is false from an outage until a probe succeeds.
	BrokerAvailable bool
}

// DroppedTotal sums Dropped over all reasons.
func (s Stats) DroppedTotal() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// Emitter sends usage records to Kafka, spooling them to disk while Kafka is
// unreachable. Emit is safe for concurrent use.
type Emitter struct {
	cfg          Config
	log          *slog.Logger
	cl           *kgo.Client
	headers      []kgo.RecordHeader
	fsync        fsyncMode
	maxInFlight  int
	pauseRecords int
	tick         time.Duration

	mem   chan Record // Emit → producer loop
	spill chan Record // Emit → spool, once mem overflowed

	// emitting counts Emit calls in progress, so that Close and the switch
	// back from spooling can wait out an Emit that read the old state. It
	// sits apart from the fields the producer loop writes.
	_        [64]byte
	emitting atomic.Int64
	_        [56]byte
	closed   atomic.Bool // Emit drops from now on
	overflow atomic.Bool // Emit skips mem for spill until the spool drains

	fl   ring
	wake chan struct{} // promises → producer loop

	closeC   chan *closeRequest
	done     chan struct{} // closed when the producer loop has exited
	once     sync.Once
	closeErr error // set before done closes

	p pump // owned by the producer loop

	nEmitted, nProduced, nSpooled, nReplayed atomic.Uint64
	nDropped                                 [numDrops]atomic.Uint64
	spoolBytes                               atomic.Int64
	spoolSegments                            atomic.Int64
	spooling, available                      atomic.Bool

	mEmitted, mProduced, mSpooled, mReplayed *metrics.Counter
	mDropped                                 [numDrops]*metrics.Counter
	mSpoolBytes, mQueue, mAvailable          *metrics.Gauge
}

type closeRequest struct {
	ctx context.Context
}

// New opens the spool, starts the producer loop and returns the emitter.
// Segments a previous run left in the spool are replayed before any record
// emitted now.
func New(cfg Config) (*Emitter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	mode, _ := parseFsync(cfg.Fsync)
	sp, err := openSpool(cfg.SpoolDir, cfg.SegmentBytes, cfg.MaxSpoolBytes, mode, cfg.Logger)
	if err != nil {
		return nil, err
	}
	e := &Emitter{
		cfg:     cfg,
		log:     cfg.Logger,
		cl:      cfg.Client,
		headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte(contentType)}},
		fsync:   mode,
		mem:     make(chan Record, cfg.MemoryRecords),
		spill:   make(chan Record, cfg.MemoryRecords),
		wake:    make(chan struct{}, 1),
		closeC:  make(chan *closeRequest, 1),
		done:    make(chan struct{}),
	}
	// Records the client cannot buffer fail at once, which reads as an
	// outage: stay below its limit, with headroom because the client
	// counts a record as buffered until just after its promise ran.
	e.maxInFlight = 50_000
	if v := bufferedLimit(cfg.Client); v > 0 {
		e.maxInFlight = min(e.maxInFlight, max(v-v/10-1, 1))
	}
	e.pauseRecords = max(cfg.MemoryRecords/4, 1)
	e.tick = min(cfg.ProbeInterval/2, cfg.StallTimeout/4, cfg.FsyncInterval, 100*time.Millisecond)
	e.tick = max(e.tick, time.Millisecond)

	set := cfg.Metrics
	// GetOrCreate: an old and a new emitter may share a set across a
	// config reload.
	e.mEmitted = set.GetOrCreateCounter("veil_gateway_events_emitted_total")
	e.mProduced = set.GetOrCreateCounter("veil_gateway_events_produced_total")
	e.mSpooled = set.GetOrCreateCounter("veil_gateway_events_spooled_total")
	e.mReplayed = set.GetOrCreateCounter("veil_gateway_events_replayed_total")
	for i, r := range dropReasons {
		e.mDropped[i] = set.GetOrCreateCounter(`veil_gateway_events_dropped_total{reason="` + string(r) + `"}`)
	}
	e.mSpoolBytes = set.GetOrCreateGauge("veil_gateway_spool_bytes", nil)
	e.mQueue = set.GetOrCreateGauge("veil_gateway_event_queue_length", nil)
	e.mAvailable = set.GetOrCreateGauge("veil_gateway_broker_available", nil)

	e.startPump(sp)
	go e.run()
	return e, nil
}

// bufferedLimit is the client's MaxBufferedRecords, 0 if unknown.
func bufferedLimit(cl *kgo.Client) int {
	switch v := cl.OptValue(kgo.MaxBufferedRecords).(type) {
	case int64:
		return int(v)
	case int:
		return v
	}
	return 0
}

// Emit queues r for Kafka and returns at once: it never waits for the
// broker, the disk or a lock. The emitter owns r's slices from now on. When
// both queues are full the record is dropped and counted.
func (e *Emitter) Emit(r Record) {
	e.emitting.Add(1)
	e.nEmitted.Add(1)
	e.mEmitted.Inc()
	if e.closed.Load() {
		e.emitting.Add(-1)
		e.drop(dropClosed, 1)
		return
	}
	if !e.overflow.Load() {
		select {
		case e.mem <- r:
			e.emitting.Add(-1)
			return
		default:
			// From now on records bypass mem until the spool has
			// drained, so none overtakes this one.
			e.overflow.Store(true)
		}
	}
	select {
	case e.spill <- r:
	default:
		e.drop(dropQueueFull, 1)
	}
	e.emitting.Add(-1)
}

// Close stops accepting records and returns once every record emitted
// before it is either acknowledged by Kafka or written to the spool and
// fsynced. It waits for acknowledgements until ctx ends and spools the rest
// then; spooled records are replayed by the next emitter on the same
// directory. The Kafka client stays open. Calling Close again returns the
// first call's result.
func (e *Emitter) Close(ctx context.Context) error {
	e.once.Do(func() {
		e.closed.Store(true)
		e.quiesce(0)
		e.closeC <- &closeRequest{ctx: ctx}
	})
	<-e.done
	return e.closeErr
}

// quiesce waits until no Emit call is in progress, at most limit (0: no
// limit). It reports whether it got there.
func (e *Emitter) quiesce(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for i := 0; e.emitting.Load() != 0; i++ {
		if limit > 0 && time.Now().After(deadline) {
			return false
		}
		if i < 64 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
	return true
}

// Stats returns the emitter's counters.
func (e *Emitter) Stats() Stats {
	s := Stats{
		Emitted:         e.nEmitted.Load(),
		Queued:          len(e.mem) + len(e.spill),
		InFlight:        e.fl.len(),
		Produced:        e.nProduced.Load(),
		Spooled:         e.nSpooled.Load(),
		Replayed:        e.nReplayed.Load(),
		Dropped:         make(map[DropReason]uint64, numDrops),
		SpoolBytes:      e.spoolBytes.Load(),
		SpoolSegments:   int(e.spoolSegments.Load()),
		Spooling:        e.spooling.Load(),
		BrokerAvailable: e.available.Load(),
	}
	for i, r := range dropReasons {
		if n := e.nDropped[i].Load(); n > 0 {
			s.Dropped[r] = n
		}
	}
	return s
}

func (e *Emitter) drop(i dropIndex, n int) {
	e.nDropped[i].Add(uint64(n))
	e.mDropped[i].Add(n)
}
