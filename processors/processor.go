// Package processors turns raw usage events into exact, queryable usage: a
// franz-go consumer group on veil.usage.raw that decodes and validates each
// record, drops duplicates by (source, id), and writes every unique event
// exactly once to ClickHouse (usage_events, whose materialized views keep the
// roll-ups) and to the Redis counters, sending refused records to the
// dead-letter topic and usage_rejects. Requests the gateway refused itself
// (data.refusal) are written to ClickHouse but count in no Redis counter.
// An event whose units its subject's counters cannot take (a sum past
// usage.MaxCounterMicro) goes to the dead-letter queue as counter_overflow
// and is written nowhere else: Redis is written before ClickHouse so that
// this is decided first, and the rest of the batch goes on.
// So does, as subject_api_mismatch, an event whose data.api_id is not the
// API its subject's subscription record names.
//
// Exactly once, whatever crashes or rebalances happen, rests on three things:
//   - offsets are committed only after every sink holds the batch;
//   - usage_events stores each row's Kafka partition and offset, so a
//     processor taking over a partition rebuilds its dedupe state from what
//     ClickHouse holds and recognises rows a crashed owner already wrote;
//   - every Redis counter update checks and advances a per-subject,
//     per-partition offset watermark in the same Lua script.
//
// The same script holds each subscription's period counter against its
// request quota: it sets the gateway's block when a hard quota is used up,
// and pushes each crossing of 80, 90 and 100% onto the subscription's quota
// outbox in Redis (internal/enforcement). After a batch, the processor
// produces the outbox lines it caused to veil.quota.events and removes them;
// a sweep produces whatever else waits in any outbox (a crash between the
// script and the produce, a broker outage, lines the control plane pushes).
// Delivery is at least once: the control plane dedupes by
// enforcement.Crossing.ID.
//
// The same call also keeps the meters the subscription record names
// (meters.go): each billable event adds to the meters whose filter selects
// it, in its period counter, and each meter's quota is held like the
// request quota, its crossings announced naming the meter and a hard one
// blocking the whole subscription.
package processors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// ReasonSinkFailed sends to the dead-letter queue a record ClickHouse keeps
// refusing, so that no partition is stuck behind it.
const ReasonSinkFailed usage.Reason = "sink_failed"

// ReasonCounterOverflow sends to the dead-letter queue an event whose units
// would take one of its subject's Redis counters past
// usage.MaxCounterMicro: it is counted nowhere, ClickHouse included, and the
// rest of its batch goes on.
const ReasonCounterOverflow usage.Reason = "counter_overflow"

// ReasonSubjectAPIMismatch sends to the dead-letter queue an event whose
// data.api_id is not the API of its subject's subscription (the record in
// Redis): it is counted nowhere, ClickHouse included, so that a producer
// allowed to write for one API cannot spend or bill another API's
// subscription. Subjects without a record are not checked.
const ReasonSubjectAPIMismatch usage.Reason = "subject_api_mismatch"

// Dead-letter headers (DESIGN.md).
const (
	HeaderError           = "veil-error"
	HeaderErrorDetail     = "veil-error-detail"
	HeaderSourceTopic     = "veil-source-topic"
	HeaderSourcePartition = "veil-source-partition"
	HeaderSourceOffset    = "veil-source-offset"
)

// Defaults for Config.
const (
	DefaultGroup        = "veil-processors"
	DefaultBatchRecords = 50_000
	DefaultBatchWait    = 500 * time.Millisecond
	DefaultDataAttempts = 5
	// DefaultQuotaSweepInterval is how often every quota outbox is drained.
	// The sweep SCANs the whole keyspace, so it runs rarely: the drain after
	// each batch is the usual path, the sweep recovers crashes and lines
	// other writers push (a downgrade, a drift heal).
	DefaultQuotaSweepInterval = time.Minute
)

// Config configures a processor.
type Config struct {
	Logger  *slog.Logger
	Metrics *metrics.Set
	Brokers []string
	// Group is the consumer group. Default veil-processors.
	Group string
	// Topic and DLQTopic default to veil.usage.raw and veil.usage.dlq.
	Topic    string
	DLQTopic string
	// QuotaTopic receives the quota threshold crossings, keyed by
	// subscription. Default veil.quota.events.
	QuotaTopic string
	// QuotaSweepInterval is how often every quota outbox in Redis is drained
	// to QuotaTopic, besides the drain after each batch: it bounds how late
	// a crossing is announced after a crash or a failed produce. Default 1m.
	QuotaSweepInterval time.Duration
	// ClickHouse is a connection with the Veil database selected.
	ClickHouse driver.Conn
	Redis      rueidis.Client
	// BatchRecords and BatchWait bound a batch: it closes at whichever comes
	// first. Defaults 50,000 records and 500ms.
	BatchRecords int
	BatchWait    time.Duration
	// MaxFuture and LateWindow bound event times. Defaults 5 minutes, 35 days.
	// MaxFuture may not exceed metering.RollupMaxFuture: the billing
	// roll-up's first served hour allows for rows that far ahead.
	MaxFuture  time.Duration
	LateWindow time.Duration
	// DataAttempts is how many times a batch ClickHouse refuses as data is
	// tried before its records are inserted one by one and the ones still
	// refused go to the dead-letter queue. Default 5. Connection failures
	// are retried without limit.
	DataAttempts int
	// KafkaOpts are appended to the consumer's options (tests tune timeouts).
	KafkaOpts []kgo.Opt
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) validate() error {
	switch {
	case c.Logger == nil || c.Metrics == nil:
		return errors.New("processor config: logger and metrics are required")
	case len(c.Brokers) == 0:
		return broker.ErrNoBrokers
	case c.ClickHouse == nil:
		return errors.New("processor config: a ClickHouse connection is required")
	case c.Redis == nil:
		return errors.New("processor config: a Redis client is required")
	}
	c.Group = cmp.Or(c.Group, DefaultGroup)
	c.Topic = cmp.Or(c.Topic, broker.TopicUsageRaw)
	c.DLQTopic = cmp.Or(c.DLQTopic, broker.TopicUsageDLQ)
	c.QuotaTopic = cmp.Or(c.QuotaTopic, broker.TopicQuotaEvents)
	c.QuotaSweepInterval = positiveOr(c.QuotaSweepInterval, DefaultQuotaSweepInterval)
	c.BatchRecords = positiveOr(c.BatchRecords, DefaultBatchRecords)
	c.BatchWait = positiveOr(c.BatchWait, DefaultBatchWait)
	c.MaxFuture = positiveOr(c.MaxFuture, usage.DefaultMaxFuture)
	if c.MaxFuture > metering.RollupMaxFuture {
		return fmt.Errorf("processor config: max future %s is over %s, the most the billing roll-up allows for", c.MaxFuture, metering.RollupMaxFuture)
	}
	c.LateWindow = positiveOr(c.LateWindow, usage.DefaultLateWindow)
	c.DataAttempts = positiveOr(c.DataAttempts, DefaultDataAttempts)
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// positiveOr returns v, or def where v is zero or negative: a negative
// size, count or interval takes the default, as an unset one does.
func positiveOr[T ~int | ~int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Processor consumes usage events. Several processors in one group share the
// partitions.
type Processor struct {
	cfg   Config
	ch    *chSink
	redis *redisSink
	m     processorMetrics

	mu        sync.Mutex
	parts     map[int32]*partitionState
	lag       map[int32]int64
	lastPrune time.Time
}

// New returns a processor; Run starts it.
func New(cfg Config) (*Processor, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Processor{
		cfg:   cfg,
		ch:    &chSink{conn: cfg.ClickHouse},
		redis: newRedisSink(cfg.Redis),
		parts: map[int32]*partitionState{},
		lag:   map[int32]int64{},
	}
	p.redis.log = cfg.Logger
	p.m = newProcessorMetrics(cfg.Metrics, p)
	return p, nil
}

// process classifies the records and writes them to every sink, retrying
// until each holds them or ctx ends.
func (p *Processor) process(ctx context.Context, cl *kgo.Client, records []*kgo.Record) error {
	p.m.consumed.Add(len(records))
	p.m.batchRecords.Update(float64(len(records)))
	t0 := time.Now()
	b, err := p.classify(ctx, records)
	if err != nil {
		return err
	}
	p.m.classifySeconds.UpdateDuration(t0)
	now := p.cfg.Now()

	// Redis first: it decides which events its counters cannot take (a sum
	// that would overflow), and those must reach neither ClickHouse nor the
	// counters, only the dead-letter queue. Its refusals are recorded in
	// Redis with the watermark, so a replay of the batch decides the same.
	// A failed attempt may have written outbox lines for some subjects
	// before a retry writes the rest: drain what any attempt named, once.
	outboxed, err := p.applyCounters(ctx, b)
	if err != nil {
		return err
	}
	if err := p.writeSinks(ctx, cl, b, now); err != nil {
		return err
	}
	if err := p.settleSinkFailed(ctx, cl, b, now); err != nil {
		return err
	}
	// Announce the crossings this batch recorded. A failure leaves the lines
	// in Redis for the sweep and must not hold up the batch: its counts are
	// safe.
	if len(outboxed) > 0 {
		if _, err := p.drainQuotaOutboxes(ctx, cl, outboxed); err != nil && ctx.Err() == nil {
			p.cfg.Logger.WarnContext(ctx, "drain quota outboxes", "subjects", len(outboxed), "err", err)
		}
	}

	p.remember(b)
	p.observe(b)
	return nil
}

// applyCounters adds the batch to the Redis counters and diverts the events
// they refuse. It returns the subjects whose quota outboxes the attempts
// wrote to.
func (p *Processor) applyCounters(ctx context.Context, b *batch) ([]string, error) {
	var outboxed []string
	named := map[string]bool{}
	if err := p.retry(ctx, "redis", func() error {
		subjects, overflowed, err := p.redis.apply(ctx, b.items)
		for _, s := range subjects {
			if !named[s] {
				named[s] = true
				outboxed = append(outboxed, s)
			}
		}
		if err == nil {
			p.divertRefused(b, overflowed)
		}
		return err
	}); err != nil {
		return nil, err
	}
	return outboxed, nil
}

// writeSinks writes the batch to ClickHouse (events, then rejects) and
// produces its dead letters.
func (p *Processor) writeSinks(ctx context.Context, cl *kgo.Client, b *batch, now time.Time) error {
	// After Redis, ClickHouse and the dead-letter queue are independent and
	// each idempotent: write them at once.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		dataErrors := 0
		if err := p.retry(gctx, "clickhouse", func() error {
			if dataErrors >= p.cfg.DataAttempts {
				return p.writeEventsOneByOne(gctx, b)
			}
			err := p.writeEvents(gctx, b)
			if err != nil && isDataError(err) {
				dataErrors++
			}
			return err
		}); err != nil {
			return err
		}
		return p.retry(gctx, "clickhouse", func() error { return p.ch.insertRejects(gctx, b.rejectsForCH, now) })
	})
	g.Go(func() error { return p.retry(gctx, "dlq", func() error { return p.produceDLQ(gctx, cl, b.rejects) }) })
	return g.Wait()
}

// observe updates the metrics of a batch every sink holds.
func (p *Processor) observe(b *batch) {
	p.m.written.Add(len(b.rows))
	for _, r := range b.rows {
		if r.event.Data.Refusal != "" {
			p.m.gatewayRefusals.Inc()
		}
	}
	p.m.duplicates.Add(b.dupes)
	written := p.cfg.Now()
	for _, r := range b.rows {
		p.m.eventLag.Update(written.Sub(r.event.Time).Seconds())
	}
	for _, r := range append(b.rejects, b.sinkFailed...) {
		p.cfg.Metrics.GetOrCreateCounter(`veil_processor_events_rejected_total{reason="` + string(r.reason) + `"}`).Inc()
	}
}

// writeEvents inserts the batch's rows. After a failure it asks ClickHouse
// which rows the failed insert did write, so a retry never doubles them.
func (p *Processor) writeEvents(ctx context.Context, b *batch) error {
	if err := p.settleWritten(ctx, b); err != nil {
		return err
	}
	err := p.ch.insertEvents(ctx, b.rows, p.cfg.Now())
	if err == nil {
		return nil
	}
	b.unsettled = true
	if serr := p.settleWritten(ctx, b); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// settleWritten, after a failed insert (b.unsettled), drops from the batch
// the rows usage_events holds. Until it succeeds the batch stays unsettled
// and is not inserted again, so a row is never written twice.
//
// The rows a failed insert wrote may be missing from the billing roll-up:
// its view is written after usage_events, and the failure may be the
// view's. They are not inserted again, so their hours are recorded in
// usage_billing_suspect, for the roll-up's readers to count from
// usage_events, before they leave the batch.
func (p *Processor) settleWritten(ctx context.Context, b *batch) error {
	if !b.unsettled {
		return nil
	}
	first := map[int32]int64{}
	for _, r := range b.rows {
		if o, ok := first[r.partition]; !ok || r.offset < o {
			first[r.partition] = r.offset
		}
	}
	written := map[int32]map[int64]bool{}
	for part, from := range first {
		w, err := p.ch.writtenOffsets(ctx, part, from)
		if err != nil {
			return err
		}
		written[part] = w
	}
	var suspect []row
	kept := make([]row, 0, len(b.rows))
	for _, r := range b.rows {
		if written[r.partition][r.offset] {
			suspect = append(suspect, r)
		} else {
			kept = append(kept, r)
		}
	}
	if err := p.ch.insertSuspects(ctx, suspect, p.cfg.Now()); err != nil {
		return err
	}
	b.rows, b.unsettled = kept, false
	return nil
}

// writeEventsOneByOne inserts the remaining rows one at a time, after the
// batch was refused as data DataAttempts times: rows ClickHouse still refuses
// become sink_failed dead letters, so no partition is stuck behind them.
func (p *Processor) writeEventsOneByOne(ctx context.Context, b *batch) error {
	if err := p.settleWritten(ctx, b); err != nil {
		return err
	}
	for len(b.rows) > 0 {
		r := b.rows[0]
		err := p.ch.insertEvents(ctx, []row{r}, p.cfg.Now())
		if err != nil {
			// A refusal may come after usage_events took the row (its
			// view failed): then it is written, and only its hour is
			// suspect.
			one := &batch{rows: b.rows[:1:1], unsettled: true}
			if serr := p.settleWritten(ctx, one); serr != nil {
				b.unsettled = true // the next attempt asks again first
				return errors.Join(err, serr)
			}
			if len(one.rows) == 0 {
				err = nil
			}
		}
		switch {
		case err == nil:
		case isDataError(err):
			p.cfg.Logger.ErrorContext(ctx, "clickhouse refuses an event; sending it to the dead-letter queue",
				"partition", r.partition, "offset", r.offset, "event_id", r.event.ID, "err", err)
			b.sinkFailed = append(b.sinkFailed, reject{reason: ReasonSinkFailed, detail: err.Error(),
				topic: p.cfg.Topic, partition: r.partition, offset: r.offset, raw: r.raw})
		default:
			return err // unreachable: retried later from this row on
		}
		b.rows = b.rows[1:]
	}
	return nil
}

// settleSinkFailed sends the rows ClickHouse refused to the dead-letter
// queue and usage_rejects, and takes them back out of the Redis counters
// they were added to concurrently, so both sinks agree.
func (p *Processor) settleSinkFailed(ctx context.Context, cl *kgo.Client, b *batch, now time.Time) error {
	if len(b.sinkFailed) == 0 {
		return nil
	}
	failed := map[[2]int64]bool{}
	for _, r := range b.sinkFailed {
		failed[[2]int64{int64(r.partition), r.offset}] = true
	}
	var items []item
	for _, it := range b.items {
		if failed[[2]int64{int64(it.partition), it.offset}] {
			items = append(items, it)
		}
	}
	if err := p.retry(ctx, "dlq", func() error { return p.produceDLQ(ctx, cl, b.sinkFailed) }); err != nil {
		return err
	}
	if err := p.retry(ctx, "clickhouse", func() error { return p.ch.insertRejects(ctx, b.sinkFailed, now) }); err != nil {
		return err
	}
	return p.retry(ctx, "redis", func() error { return p.redis.compensate(ctx, items, p.cfg.Topic) })
}

func (p *Processor) produceDLQ(ctx context.Context, cl *kgo.Client, rejects []reject) error {
	if len(rejects) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(rejects))
	for i, r := range rejects {
		recs[i] = &kgo.Record{
			Topic: p.cfg.DLQTopic,
			Value: r.raw,
			Headers: []kgo.RecordHeader{
				{Key: HeaderError, Value: []byte(r.reason)},
				{Key: HeaderErrorDetail, Value: []byte(r.detail)},
				{Key: HeaderSourceTopic, Value: []byte(r.topic)},
				{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.partition)))},
				{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.offset, 10))},
			},
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d dead letters: %w", len(recs), err)
	}
	return nil
}

// retry runs fn until it succeeds or ctx ends, with exponential backoff and
// full jitter from 100ms to 10s. Consumption pauses meanwhile: nothing is
// polled, so the broker holds the backlog.
func (p *Processor) retry(ctx context.Context, sink string, fn func() error) error {
	start := time.Now()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		p.m.sinkSeconds(sink).UpdateDuration(start)
		if err == nil {
			return nil
		}
		p.m.sinkErrors(sink).Inc()
		p.cfg.Logger.WarnContext(ctx, "sink failed; retrying", "sink", sink, "attempt", attempt, "err", err)
		sleep := time.Duration(rand.Int64N(int64(backoff)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", sink, ctx.Err(), err)
		case <-time.After(sleep):
		}
		backoff = min(2*backoff, 10*time.Second)
		start = time.Now()
	}
}
