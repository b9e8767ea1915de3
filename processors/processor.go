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
// enforcement.Event.ID.
package processors

import (
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
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Topic == "" {
		c.Topic = broker.TopicUsageRaw
	}
	if c.DLQTopic == "" {
		c.DLQTopic = broker.TopicUsageDLQ
	}
	if c.QuotaTopic == "" {
		c.QuotaTopic = broker.TopicQuotaEvents
	}
	if c.QuotaSweepInterval <= 0 {
		c.QuotaSweepInterval = DefaultQuotaSweepInterval
	}
	if c.BatchRecords <= 0 {
		c.BatchRecords = DefaultBatchRecords
	}
	if c.BatchWait <= 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.MaxFuture <= 0 {
		c.MaxFuture = usage.DefaultMaxFuture
	}
	if c.LateWindow <= 0 {
		c.LateWindow = usage.DefaultLateWindow
	}
	if c.DataAttempts <= 0 {
		c.DataAttempts = DefaultDataAttempts
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// partitionState is what a processor knows about a partition it owns. It is
// built on the first batch after the partition is assigned and dropped when
// the partition is revoked or lost.
type partitionState struct {
	seen *seenSet
	// rejected holds offsets usage_rejects already has, at or after the
	// first offset processed since assignment.
	rejected map[int64]bool
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
	p.m = newProcessorMetrics(cfg.Metrics, p)
	return p, nil
}

// Run consumes until ctx ends or a fatal error occurs.
func (p *Processor) Run(ctx context.Context) error {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.dropPartitions("revoked")),
		kgo.OnPartitionsLost(p.dropPartitions("lost")),
		kgo.ProducerLinger(0),
	}
	cl, err := broker.NewClient(broker.ClientConfig{
		Brokers:  p.cfg.Brokers,
		ClientID: "veil-processor",
		Logger:   p.cfg.Logger,
		Metrics:  p.cfg.Metrics,
		Opts:     append(opts, p.cfg.KafkaOpts...),
	})
	if err != nil {
		return err
	}
	defer cl.Close()

	sweepCtx, stopSweep := context.WithCancel(ctx)
	var sweeping sync.WaitGroup
	sweeping.Go(func() { p.sweepQuotaOutboxes(sweepCtx, cl) })
	defer func() {
		stopSweep()
		sweeping.Wait()
	}()

	for ctx.Err() == nil {
		pollStart := time.Now()
		records := p.pollBatch(ctx, cl)
		p.m.pollSeconds.UpdateDuration(pollStart)
		if len(records) == 0 {
			cl.AllowRebalance()
			continue
		}
		if err := p.process(ctx, cl, records); err != nil {
			cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			// The sinks hold the batch; whoever owns the partitions next
			// recognises it, so a failed commit costs only a re-read.
			p.cfg.Logger.WarnContext(ctx, "commit offsets", "err", err)
			p.m.commitErrors.Inc()
		}
		cl.AllowRebalance()
	}
	return nil
}

// pollBatch gathers records until the batch is full or BatchWait passes.
func (p *Processor) pollBatch(ctx context.Context, cl *kgo.Client) []*kgo.Record {
	var records []*kgo.Record
	deadline := time.Now().Add(p.cfg.BatchWait)
	for len(records) < p.cfg.BatchRecords {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		fs := cl.PollRecords(pctx, p.cfg.BatchRecords-len(records))
		cancel()
		fs.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.cfg.Logger.WarnContext(ctx, "fetch", "topic", topic, "partition", partition, "err", err)
			}
		})
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if n := len(fp.Records); n > 0 {
				p.setLag(fp.Partition, fp.HighWatermark-fp.Records[n-1].Offset-1)
			}
			records = append(records, fp.Records...)
		})
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
	}
	return records
}

func (p *Processor) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	p.cfg.Logger.InfoContext(ctx, "partitions assigned", "partitions", assigned[p.cfg.Topic])
}

func (p *Processor) dropPartitions(why string) func(context.Context, *kgo.Client, map[string][]int32) {
	return func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
		parts := m[p.cfg.Topic]
		p.mu.Lock()
		for _, part := range parts {
			delete(p.parts, part)
			delete(p.lag, part)
		}
		p.mu.Unlock()
		p.redis.forget(parts)
		p.cfg.Logger.InfoContext(ctx, "partitions "+why, "partitions", parts)
	}
}

func (p *Processor) setLag(partition int32, lag int64) {
	p.mu.Lock()
	p.lag[partition] = lag
	p.mu.Unlock()
}

// state returns the partition's state, building it from ClickHouse on the
// first batch after assignment.
func (p *Processor) state(ctx context.Context, partition int32, firstOffset int64) (*partitionState, error) {
	p.mu.Lock()
	st := p.parts[partition]
	p.mu.Unlock()
	if st != nil {
		return st, nil
	}
	start := time.Now()
	st = &partitionState{seen: newSeenSet()}
	since := p.cfg.Now().Add(-p.cfg.LateWindow)
	if err := p.ch.loadSeen(ctx, partition, since, st.seen); err != nil {
		return nil, err
	}
	rejected, err := p.ch.rejectedOffsets(ctx, p.cfg.Topic, partition, firstOffset)
	if err != nil {
		return nil, err
	}
	st.rejected = rejected
	p.mu.Lock()
	p.parts[partition] = st
	p.mu.Unlock()
	p.cfg.Logger.InfoContext(ctx, "partition state rebuilt from clickhouse", "partition", partition,
		"events", st.seen.len(), "first_offset", firstOffset, "duration", time.Since(start))
	return st, nil
}

// batch is one poll's records sorted into what each sink must do.
type batch struct {
	rows    []row
	items   []item
	rejects []reject
	// rejectsForCH are the rejects usage_rejects does not hold yet.
	rejectsForCH []reject
	// sinkFailed are rows ClickHouse refused DataAttempts times and then
	// alone: they go to the dead-letter queue instead.
	sinkFailed []reject
	// fresh are the keys this batch writes, merged into the seen sets once
	// the sinks hold it.
	fresh map[int32]map[eventKey]seenEntry
	dupes int
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
		return err
	}

	// The other sinks are independent and each idempotent: write them at once.
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
	if err := g.Wait(); err != nil {
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

	p.mu.Lock()
	for part, keys := range b.fresh {
		if st := p.parts[part]; st != nil {
			for k, e := range keys {
				st.seen.add(k, e.offset, e.hour)
			}
		}
	}
	// Forget events older than the late-event window now and then: they are
	// refused before dedupe, so remembering them serves nothing.
	if time.Since(p.lastPrune) > 10*time.Minute {
		minHour := uint32(p.cfg.Now().Add(-p.cfg.LateWindow).Unix() / 3600)
		for _, st := range p.parts {
			st.seen.prune(minHour)
		}
		p.lastPrune = time.Now()
	}
	p.mu.Unlock()
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
	return nil
}

// classify decodes, validates and dedupes the records.
func (p *Processor) classify(ctx context.Context, records []*kgo.Record) (*batch, error) {
	b := &batch{fresh: map[int32]map[eventKey]seenEntry{}}
	now := p.cfg.Now()
	states := map[int32]*partitionState{}
	for _, r := range records {
		st, ok := states[r.Partition]
		if !ok {
			var err error
			if err = p.retry(ctx, "clickhouse", func() error {
				st, err = p.state(ctx, r.Partition, r.Offset)
				return err
			}); err != nil {
				return nil, err
			}
			states[r.Partition] = st
		}
		e, err := usage.Decode(r.Value)
		if err == nil {
			err = e.CheckTime(now, p.cfg.MaxFuture, p.cfg.LateWindow)
		}
		if err != nil {
			rej := reject{reason: usage.ReasonMalformedJSON, detail: err.Error(), topic: r.Topic, partition: r.Partition, offset: r.Offset, raw: r.Value}
			var ve *usage.Error
			if errors.As(err, &ve) {
				rej.reason, rej.detail = ve.Reason, ve.Detail
			}
			b.rejects = append(b.rejects, rej)
			if !st.rejected[r.Offset] {
				b.rejectsForCH = append(b.rejectsForCH, rej)
			}
			continue
		}
		k := keyOf(e.Source, e.ID)
		fresh := b.fresh[r.Partition]
		if fresh == nil {
			fresh = map[eventKey]seenEntry{}
			b.fresh[r.Partition] = fresh
		}
		if _, dup := fresh[k]; dup {
			b.dupes++
			continue
		}
		writtenAt, seen := st.seen.lookup(k)
		if seen && writtenAt != r.Offset {
			b.dupes++
			continue
		}
		// Not a duplicate. When ClickHouse already holds it from this very
		// offset (a crashed owner wrote it), only Redis may still need it;
		// the watermark tells.
		if !seen {
			b.rows = append(b.rows, row{event: e, partition: r.Partition, offset: r.Offset, raw: r.Value})
		}
		fresh[k] = seenEntry{offset: r.Offset, hour: uint32(e.Time.Unix() / 3600)}
		b.items = append(b.items, item{
			subject: e.Subject, keyID: e.Data.KeyID, partition: r.Partition, offset: r.Offset,
			time: e.Time, unitsMicro: e.Data.Units.Shift(6).IntPart(), apiID: e.Data.APIID, gatewayRefused: e.Data.Refusal != "",
		})
	}
	return b, nil
}

// divertRefused takes the events the Redis counters refused out of the
// batch's rows and sends them to the dead-letter queue and usage_rejects
// instead, with reason counter_overflow or subject_api_mismatch.
func (p *Processor) divertRefused(b *batch, refusedItems []item) {
	if len(refusedItems) == 0 {
		return
	}
	refused := map[[2]int64]*item{}
	for i, it := range refusedItems {
		refused[[2]int64{int64(it.partition), it.offset}] = &refusedItems[i]
	}
	kept := b.rows[:0]
	for _, r := range b.rows {
		it := refused[[2]int64{int64(r.partition), r.offset}]
		if it == nil {
			kept = append(kept, r)
			continue
		}
		// Not written: a resend of the same event is not a duplicate.
		delete(b.fresh[r.partition], keyOf(r.event.Source, r.event.ID))
		rej := reject{reason: ReasonCounterOverflow, topic: p.cfg.Topic, partition: r.partition, offset: r.offset, raw: r.raw,
			detail: fmt.Sprintf("event %s of subject %s (%s units): adding its units to the subject's counters would pass %d micro-units",
				r.event.ID, r.event.Subject, r.event.Data.Units, usage.MaxCounterMicro)}
		if it.apiMismatch {
			rej.reason = ReasonSubjectAPIMismatch
			rej.detail = fmt.Sprintf("event %s: subject %s is a subscription of another API than %q",
				r.event.ID, r.event.Subject, r.event.Data.APIID)
		}
		b.rejects = append(b.rejects, rej)
		p.mu.Lock()
		st := p.parts[r.partition]
		p.mu.Unlock()
		if st == nil || !st.rejected[r.offset] {
			b.rejectsForCH = append(b.rejectsForCH, rej)
		}
	}
	b.rows = kept
}

// writeEvents inserts the batch's rows. After a failure it asks ClickHouse
// which rows the failed insert did write, so a retry never doubles them.
func (p *Processor) writeEvents(ctx context.Context, b *batch) error {
	err := p.ch.insertEvents(ctx, b.rows, p.cfg.Now())
	if err == nil {
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
		w, qerr := p.ch.writtenOffsets(ctx, part, from)
		if qerr != nil {
			return errors.Join(err, qerr) // keep the rows: the next attempt asks again
		}
		written[part] = w
	}
	kept := b.rows[:0]
	for _, r := range b.rows {
		if !written[r.partition][r.offset] {
			kept = append(kept, r)
		}
	}
	b.rows = kept
	return err
}

// writeEventsOneByOne inserts the remaining rows one at a time, after the
// batch was refused as data DataAttempts times: rows ClickHouse still refuses
// become sink_failed dead letters, so no partition is stuck behind them.
func (p *Processor) writeEventsOneByOne(ctx context.Context, b *batch) error {
	for len(b.rows) > 0 {
		r := b.rows[0]
		err := p.ch.insertEvents(ctx, []row{r}, p.cfg.Now())
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
